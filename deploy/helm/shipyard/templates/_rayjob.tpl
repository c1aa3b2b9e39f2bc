{{- define "shipyard.runId" -}}
{{- .Values.jobs.runId | default (printf "r%d" (int .Release.Revision)) -}}
{{- end -}}

{{/* The training config's ConfigMap: one per run for the one-off RayJob ("train"),
     one for the schedule ("retrain"). (dict "root" $ "name" "train"|"retrain") */}}
{{- define "shipyard.trainConfigMap" -}}
{{- $fullname := include "shipyard.fullname" .root -}}
{{- if eq .name "retrain" -}}
{{- printf "%s-retrain" $fullname -}}
{{- else -}}
{{- printf "%s-train-%s" $fullname (include "shipyard.runId" .root) -}}
{{- end -}}
{{- end -}}

{{/* A pipeline RayJob on a cluster of its own, removed when the job ends. The
     entrypoint is the same `shipyard` command a user runs locally; `--local` runs it
     in the job's driver, which joins the RayJob's cluster (RAY_ADDRESS).
     (dict "root" $ "name" "features" "entrypoint" "..." "trainConfig" "train"|"retrain"|"") */}}
{{- define "shipyard.rayJob" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $fullname := include "shipyard.fullname" $root -}}
{{- $spec := include "shipyard.rayClusterSpec" (dict "root" $root "component" (printf "job-%s" .name) "head" $v.ray.head "groups" $v.ray.workerGroups "serviceAccount" (printf "%s-ray" $fullname) "serve" false "autoscale" true "gcsFt" false) | fromYaml -}}
{{- if .trainConfig -}}
{{- $vol := dict "name" "train-config" "configMap" (dict "name" (include "shipyard.trainConfigMap" (dict "root" $root "name" .trainConfig))) -}}
{{- $mount := dict "name" "train-config" "mountPath" "/etc/shipyard/train" "readOnly" true -}}
{{- $head := $spec.headGroupSpec.template.spec -}}
{{- $_ := set $head "volumes" (append $head.volumes $vol) -}}
{{- $c := index $head.containers 0 -}}
{{- $_ := set $c "volumeMounts" (append $c.volumeMounts $mount) -}}
{{- end -}}
{{- $jobName := printf "%s-%s-%s" $fullname .name (include "shipyard.runId" $root) -}}
{{- if gt (len $jobName) 47 -}}
{{- fail (printf "RayJob name %q is longer than KubeRay's 47 characters: shorten values.jobs.runId or values.fullnameOverride" $jobName) -}}
{{- end -}}
apiVersion: ray.io/v1
kind: RayJob
metadata:
  name: {{ $jobName }}
  labels:
    {{- include "shipyard.componentLabels" (list $root (printf "job-%s" .name)) | nindent 4 }}
  annotations:
    # A finished job stays for its logs; the next `helm upgrade` does not delete it.
    helm.sh/resource-policy: keep
spec:
  entrypoint: {{ .entrypoint | quote }}
  runtimeEnvYAML: |
    worker_process_setup_hook: pipelines.features._feast_fixes.install
  shutdownAfterJobFinishes: true
  ttlSecondsAfterFinished: {{ $v.jobs.ttlSecondsAfterFinished }}
  activeDeadlineSeconds: {{ $v.jobs.activeDeadlineSeconds }}
  backoffLimit: {{ $v.jobs.backoffLimit }}
  submitterPodTemplate:
    metadata:
      labels:
        {{- include "shipyard.componentLabels" (list $root "job-submitter") | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ $fullname }}
      automountServiceAccountToken: false
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      containers:
        - name: ray-job-submitter
          image: {{ include "shipyard.image" $root }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          {{- if $v.ray.auth.enabled }}
          # the Job API of a token-authenticated cluster (set here, so it names the
          # chart's token Secret whatever KubeRay would default to)
          env:
            - name: RAY_AUTH_MODE
              value: token
            - name: RAY_AUTH_TOKEN
              valueFrom:
                secretKeyRef:
                  name: {{ include "shipyard.rayTokenSecret" $root }}
                  key: auth_token
          {{- end }}
          resources:
            {{- toYaml $v.jobs.submitterResources | nindent 12 }}
          securityContext:
            {{- toYaml $v.containerSecurityContext | nindent 12 }}
  rayClusterSpec:
    {{- toYaml $spec | nindent 4 }}
{{- end -}}
