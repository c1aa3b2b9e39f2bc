{{/* Names and labels, in the helm create / KubeRay chart style. */}}

{{- define "shipyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shipyard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "shipyard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "shipyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "shipyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shipyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: (list $ "mlflow") */}}
{{- define "shipyard.componentLabels" -}}
{{- $root := index . 0 -}}
{{ include "shipyard.labels" $root }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Instance and component only: KubeRay adds its own app.kubernetes.io/name to the
     pods it creates when a template lacks one. */}}
{{- define "shipyard.componentSelector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "shipyard.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/* Object names shared by several templates. */}}
{{- define "shipyard.rayTokenSecret" -}}
{{- .Values.ray.auth.existingSecret | default (printf "%s-ray-token" (include "shipyard.fullname" .)) -}}
{{- end -}}
{{- define "shipyard.postgresSecret" -}}
{{- .Values.postgres.existingSecret | default (printf "%s-postgres" (include "shipyard.fullname" .)) -}}
{{- end -}}
{{- define "shipyard.redisSecret" -}}
{{- .Values.redis.existingSecret | default (printf "%s-redis" (include "shipyard.fullname" .)) -}}
{{- end -}}
{{- define "shipyard.postgresHost" -}}
{{- if .Values.postgres.enabled -}}{{ include "shipyard.fullname" . }}-postgres{{- else -}}{{ .Values.postgres.external.host }}{{- end -}}
{{- end -}}
{{- define "shipyard.postgresPort" -}}
{{- if .Values.postgres.enabled -}}5432{{- else -}}{{ .Values.postgres.external.port }}{{- end -}}
{{- end -}}
{{- define "shipyard.redisHost" -}}
{{- if .Values.redis.enabled -}}{{ include "shipyard.fullname" . }}-redis{{- else -}}{{ .Values.redis.external.host }}{{- end -}}
{{- end -}}
{{- define "shipyard.redisPort" -}}
{{- if .Values.redis.enabled -}}6379{{- else -}}{{ .Values.redis.external.port }}{{- end -}}
{{- end -}}
{{- define "shipyard.mlflowUrl" -}}
{{- printf "http://%s-mlflow:%d" (include "shipyard.fullname" .) (int .Values.mlflow.port) -}}
{{- end -}}
{{- define "shipyard.dataClaim" -}}
{{- .Values.storage.data.existingClaim | default (printf "%s-data" (include "shipyard.fullname" .)) -}}
{{- end -}}
{{- define "shipyard.rayServiceName" -}}
{{- printf "%s-serve" (include "shipyard.fullname" .) -}}
{{- end -}}
{{- define "shipyard.feastRepoPath" -}}/etc/shipyard/feast{{- end -}}

{{/* A random secret value that survives upgrades: the live Secret's, else a new one.
     (list $ "<secret name>" "<key>") */}}
{{- define "shipyard.persistentRandom" -}}
{{- $root := index . 0 -}}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace (index . 1) -}}
{{- if and $existing (hasKey $existing.data (index . 2)) -}}
{{- index $existing.data (index . 2) -}}
{{- else -}}
{{- randAlphaNum 32 | b64enc -}}
{{- end -}}
{{- end -}}

{{/* Bad values fail here, naming the values path. */}}
{{- define "shipyard.validate" -}}
{{- if ne .Values.profile "cluster" -}}
{{- fail (printf "values.profile must be \"cluster\" on Kubernetes (the local profile runs with `shipyard up`), got %q" (toString .Values.profile)) -}}
{{- end -}}
{{- if not .Values.postgres.enabled -}}
{{- if not .Values.postgres.external.host -}}
{{- fail "values.postgres.external.host is required when postgres.enabled is false" -}}
{{- end -}}
{{- if not .Values.postgres.existingSecret -}}
{{- fail "values.postgres.existingSecret is required when postgres.enabled is false: name a Secret holding the external database's password" -}}
{{- end -}}
{{- end -}}
{{- if not .Values.redis.enabled -}}
{{- if not .Values.redis.external.host -}}
{{- fail "values.redis.external.host is required when redis.enabled is false" -}}
{{- end -}}
{{- if not .Values.redis.existingSecret -}}
{{- fail "values.redis.existingSecret is required when redis.enabled is false: name a Secret holding the external Redis password" -}}
{{- end -}}
{{- end -}}
{{- if eq .Values.image.tag "latest" -}}
{{- fail "values.image.tag must name one build, not \"latest\"" -}}
{{- end -}}
{{- range $path, $groups := dict "ray.workerGroups" .Values.ray.workerGroups "serve.workerGroups" .Values.serve.workerGroups -}}
{{- range $name, $g := $groups -}}
{{- if or (lt (int $g.replicas) (int $g.minReplicas)) (gt (int $g.replicas) (int $g.maxReplicas)) -}}
{{- fail (printf "values.%s.%s: replicas (%d) must lie between minReplicas (%d) and maxReplicas (%d)" $path $name (int $g.replicas) (int $g.minReplicas) (int $g.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.serve.upgradeStrategy.gatewayClassName (not .Values.serve.upgradeStrategy.operatorFeatureGate) -}}
{{- fail "values.serve.upgradeStrategy.gatewayClassName (NewClusterWithIncrementalUpgrade) needs the KubeRay operator's RayServiceIncrementalUpgrade feature gate and the Gateway API; with both in place set values.serve.upgradeStrategy.operatorFeatureGate=true, or leave gatewayClassName empty for NewCluster" -}}
{{- end -}}
{{- if .Values.serve.enabled -}}
{{- include "shipyard.validateModels" .Values.serve.models -}}
{{- end -}}
{{- if and .Values.storage.data.hostPath .Values.storage.data.existingClaim -}}
{{- fail "values.storage.data.hostPath and values.storage.data.existingClaim exclude each other: pick one" -}}
{{- end -}}
{{- end -}}

{{/* serve.models: each entry is one Serve application and route, so names are unique
     and never the OIP gateway's (serving.RESERVED). The schema checks the same pattern;
     these checks also hold under --skip-schema-validation. */}}
{{- define "shipyard.validateModels" -}}
{{- if not . -}}
{{- fail "values.serve.models must list at least one model, e.g. [{name: fraud-detector, stableVersion: \"\"}] (or set serve.enabled=false)" -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $i, $m := . -}}
{{- $name := toString (default "" $m.name) -}}
{{- if not (regexMatch "^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$" $name) -}}
{{- fail (printf "values.serve.models[%d].name %q is not a model name: 1-63 letters, digits, '_', '.' or '-', starting and ending with a letter or digit" $i $name) -}}
{{- end -}}
{{- if has $name (list "oip-v2" "v2") -}}
{{- fail (printf "values.serve.models[%d].name %q is reserved: oip-v2 and v2 are the OIP gateway's application and route; register the model under another name" $i $name) -}}
{{- end -}}
{{- if hasKey $seen $name -}}
{{- fail (printf "values.serve.models lists %q twice (entries %d and %d): each model is one application and route, list it once" $name (get $seen $name) $i) -}}
{{- end -}}
{{- $_ := set $seen $name $i -}}
{{- end -}}
{{- end -}}

{{/* Settings of every Shipyard process in the cluster (SHIPYARD_* variables, see
     platform/shipyard/settings.py). Passwords come from Secrets: Kubernetes expands
     $(VAR) in the MLflow URL; Feast expands ${VAR} when it reads feature_store.yaml. */}}
{{- define "shipyard.env" -}}
- name: SHIPYARD_PROFILE
  value: {{ .Values.profile | quote }}
- name: SHIPYARD_DATA_ROOT
  value: {{ .Values.storage.data.mountPath | quote }}
- name: SHIPYARD_TRAINING__STORAGE
  value: {{ printf "%s/training" .Values.storage.data.mountPath | quote }}
- name: SHIPYARD_MLFLOW__TRACKING_URI
  value: {{ include "shipyard.mlflowUrl" . | quote }}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "shipyard.postgresSecret" . }}
      key: {{ .Values.postgres.passwordKey }}
# Not REDIS_PASSWORD: KubeRay sets that itself in heads with GCS fault tolerance, and
# refuses a RayCluster whose head declares it.
- name: FEAST_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "shipyard.redisSecret" . }}
      key: {{ .Values.redis.passwordKey }}
- name: SHIPYARD_FEATURES__PROJECT
  value: {{ .Values.feast.project | quote }}
- name: SHIPYARD_FEATURES__REGISTRY_URL
  value: {{ include "shipyard.registryUrl" . | quote }}
- name: SHIPYARD_FEATURES__REDIS
  value: {{ include "shipyard.redisConnection" . | quote }}
- name: SHIPYARD_SERVE__BACKEND
  value: kubernetes
- name: SHIPYARD_SERVE__NAMESPACE
  value: {{ .Release.Namespace | quote }}
- name: SHIPYARD_SERVE__RAYSERVICE
  value: {{ include "shipyard.rayServiceName" . | quote }}
- name: SHIPYARD_SERVE__FEATURE_REPO
  value: {{ include "shipyard.feastRepoPath" . | quote }}
- name: SHIPYARD_SERVE__HTTP_PORT
  value: {{ .Values.serve.httpPort | quote }}
{{- end -}}

{{/* How Ray runs Serve's data plane in the serving cluster's pods (values
serve.rayEnv; the same map `shipyard up` sets locally: shipyard.serving.SERVE_RAY_ENV). */}}
{{- define "shipyard.serveRayEnv" -}}
{{- range $name, $value := .Values.serve.rayEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "shipyard.registryUrl" -}}
{{- printf "postgresql+psycopg://%s:${POSTGRES_PASSWORD}@%s:%s/%s" .Values.postgres.username (include "shipyard.postgresHost" .) (include "shipyard.postgresPort" .) .Values.postgres.feastDatabase -}}
{{- end -}}
{{- define "shipyard.redisConnection" -}}
{{- printf "%s:%s,password=${FEAST_REDIS_PASSWORD}" (include "shipyard.redisHost" .) (include "shipyard.redisPort" .) -}}
{{- end -}}

{{/* Volumes of Ray pods: the shared data claim, /dev/shm for the object store, the
     Feast repo configuration and the training config. */}}
{{- define "shipyard.rayVolumes" -}}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "shipyard.dataClaim" . }}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: 2Gi
- name: tmp
  emptyDir: {}
- name: feast
  configMap:
    name: {{ include "shipyard.fullname" . }}-feast
{{- end -}}
{{- define "shipyard.rayVolumeMounts" -}}
- name: data
  mountPath: {{ .Values.storage.data.mountPath }}
- name: shm
  mountPath: /dev/shm
- name: tmp
  mountPath: /tmp/ray
- name: feast
  mountPath: {{ include "shipyard.feastRepoPath" . }}
  readOnly: true
{{- end -}}

{{- define "shipyard.rayHeadProbes" -}}
readinessProbe:
  exec:
    command: ["bash", "-c", "wget -T 4 -q -O- http://localhost:52365/api/local_raylet_healthz | grep success && wget -T 4 -q -O- http://localhost:8265/api/gcs_healthz | grep success"]
  initialDelaySeconds: 10
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 10
livenessProbe:
  exec:
    command: ["bash", "-c", "wget -T 4 -q -O- http://localhost:52365/api/local_raylet_healthz | grep success && wget -T 4 -q -O- http://localhost:8265/api/gcs_healthz | grep success"]
  initialDelaySeconds: 30
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 120
{{- end -}}

{{/* (list $ serveProxy) — serving workers are ready only once their Serve proxy is. */}}
{{- define "shipyard.rayWorkerProbes" -}}
{{- $serve := index . 1 -}}
readinessProbe:
  exec:
    command: ["bash", "-c", "wget -T 4 -q -O- http://localhost:52365/api/local_raylet_healthz | grep success{{ if $serve }} && wget -T 4 -q -O- http://localhost:{{ (index . 0).Values.serve.httpPort }}/-/healthz | grep success{{ end }}"]
  initialDelaySeconds: 10
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 10
livenessProbe:
  exec:
    command: ["bash", "-c", "wget -T 4 -q -O- http://localhost:52365/api/local_raylet_healthz | grep success"]
  initialDelaySeconds: 30
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 120
{{- end -}}

{{/* The spec of a Ray cluster, shared by the jobs RayCluster, the pipeline RayJobs and
     the RayService: (dict "root" $ "component" "jobs" "head" .Values.ray.head
     "groups" .Values.ray.workerGroups "serviceAccount" "<fullname>-ray" "serve" false
     "autoscale" true) */}}
{{- define "shipyard.rayClusterSpec" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
rayVersion: {{ $v.ray.version | quote }}
enableInTreeAutoscaling: {{ .autoscale }}
{{- if .autoscale }}
autoscalerOptions:
  upscalingMode: {{ $v.ray.autoscaler.upscalingMode }}
  idleTimeoutSeconds: {{ $v.ray.autoscaler.idleTimeoutSeconds }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  resources:
    {{- toYaml $v.ray.autoscaler.resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.containerSecurityContext | nindent 4 }}
{{- end }}
{{- if $v.ray.auth.enabled }}
authOptions:
  mode: token
  secretName: {{ include "shipyard.rayTokenSecret" $root }}
{{- end }}
{{- if and $v.ray.gcsFaultTolerance.enabled .gcsFt }}
gcsFaultToleranceOptions:
  redisAddress: {{ printf "%s:%s" (include "shipyard.redisHost" $root) (include "shipyard.redisPort" $root) | quote }}
  redisPassword:
    valueFrom:
      secretKeyRef:
        name: {{ include "shipyard.redisSecret" $root }}
        key: {{ $v.redis.passwordKey }}
{{- end }}
headGroupSpec:
  rayStartParams:
    num-cpus: {{ .head.numCpus | quote }}
    dashboard-host: "0.0.0.0"
  template:
    metadata:
      labels:
        {{- include "shipyard.componentLabels" (list $root (printf "%s-head" .component)) | nindent 8 }}
    spec:
      serviceAccountName: {{ .serviceAccount }}
      # The in-tree autoscaler (a sidecar here) scales the cluster through the
      # Kubernetes API, with the Role KubeRay binds to this service account.
      automountServiceAccountToken: {{ or .autoscale .serve }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .head.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .head.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: ray-head
          image: {{ include "shipyard.image" $root }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          env:
            {{- include "shipyard.env" $root | nindent 12 }}
            {{- if .serve }}
            {{- include "shipyard.serveRayEnv" $root | nindent 12 }}
            {{- end }}
          ports:
            - {containerPort: 6379, name: gcs-server}
            - {containerPort: 8265, name: dashboard}
            - {containerPort: 10001, name: client}
            {{- if .serve }}
            - {containerPort: {{ $v.serve.httpPort }}, name: serve}
            {{- end }}
          resources:
            {{- toYaml .head.resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.containerSecurityContext | nindent 12 }}
          {{- include "shipyard.rayHeadProbes" $root | nindent 10 }}
          volumeMounts:
            {{- include "shipyard.rayVolumeMounts" $root | nindent 12 }}
      volumes:
        {{- include "shipyard.rayVolumes" $root | nindent 8 }}
workerGroupSpecs:
{{- range $name, $g := .groups }}
  - groupName: {{ $name }}
    replicas: {{ $g.replicas }}
    minReplicas: {{ $g.minReplicas }}
    maxReplicas: {{ $g.maxReplicas }}
    rayStartParams:
      {{- with $g.rayResources }}
      resources: {{ toJson . | quote | squote }}
      {{- else }}
      {}
      {{- end }}
    template:
      metadata:
        labels:
          {{- include "shipyard.componentLabels" (list $root (printf "%s-worker" $.component)) | nindent 10 }}
      spec:
        serviceAccountName: {{ $.serviceAccount }}
        # Workers call the Kubernetes API only when serving (the canary controller).
        automountServiceAccountToken: {{ $.serve }}
        securityContext:
          {{- toYaml $v.podSecurityContext | nindent 10 }}
        {{- with $v.imagePullSecrets }}
        imagePullSecrets:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- with $g.nodeSelector }}
        nodeSelector:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- with $g.tolerations }}
        tolerations:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        containers:
          - name: ray-worker
            image: {{ include "shipyard.image" $root }}
            imagePullPolicy: {{ $v.image.pullPolicy }}
            env:
              {{- include "shipyard.env" $root | nindent 14 }}
              {{- if $.serve }}
              {{- include "shipyard.serveRayEnv" $root | nindent 14 }}
              {{- end }}
            resources:
              {{- toYaml $g.resources | nindent 14 }}
            securityContext:
              {{- toYaml $v.containerSecurityContext | nindent 14 }}
            {{- include "shipyard.rayWorkerProbes" (list $root $.serve) | nindent 12 }}
            volumeMounts:
              {{- include "shipyard.rayVolumeMounts" $root | nindent 14 }}
        volumes:
          {{- include "shipyard.rayVolumes" $root | nindent 10 }}
{{- end }}
{{- end -}}
