{{/* The RayService's serveConfigV2: files/serve-config.json, written by
     platform/shipyard/serving.py (`make chart`), the same code that builds the local
     deploy's config. The file holds one placeholder model application ("MODEL") and then
     the OIP gateway; this install gets one copy of the placeholder per serve.models entry,
     in values order, then the gateway: what serving.serve_config builds for those models.
     The values fill in each model's name, route and stable version, and the MLflow URL,
     the Feast repo, the port, batching and the inference log they share.
     (list $ liveText): when the RayService already exists (an upgrade), each listed
     model's live rollout state is kept (see shipyard.keepLiveRollout), so a `helm upgrade`
     never undoes `shipyard deploy` or a rollout; a model's stableVersion only applies
     while it is not live. */}}
{{- define "shipyard.serveConfig" -}}
{{- $root := index . 0 -}}
{{- $s := $root.Values.serve -}}
{{- $config := $root.Files.Get "files/serve-config.json" | fromJson -}}
{{- $_ := set $config.http_options "port" (int $s.httpPort) -}}
{{- $_ := set $config.logging_config "enable_access_log" $s.accessLog -}}
{{- $placeholder := first $config.applications -}}
{{- $args := $placeholder.args -}}
{{- $_ := set $args "tracking_uri" (include "shipyard.mlflowUrl" $root) -}}
{{- $_ := set $args "online_features" $s.onlineFeatures -}}
{{- $_ := set $args "feature_repo" (ternary (include "shipyard.feastRepoPath" $root) "" $s.onlineFeatures) -}}
{{- $_ := set $args "max_batch_size" (int $s.maxBatchSize) -}}
{{- $_ := set $args "batch_wait_timeout_s" $s.batchWaitTimeoutS -}}
{{- if $s.inferenceLog.enabled -}}
{{- $log := $args.inference_log -}}
{{- $_ := set $log "uri" (default (printf "%s/inference-log" $root.Values.storage.data.mountPath) $s.inferenceLog.uri) -}}
{{- $_ := set $log "sample_rate" $s.inferenceLog.sampleRate -}}
{{- $_ := set $log "flush_interval_s" $s.inferenceLog.flushIntervalS -}}
{{- else -}}
{{- $_ := set $args "inference_log" nil -}}
{{- end -}}
{{- $live := include "shipyard.liveApps" (index . 1) | fromJson -}}
{{- $apps := list -}}
{{- range $s.models -}}
{{- $app := deepCopy $placeholder -}}
{{- $_ := set $app "name" .name -}}
{{- $_ := set $app "route_prefix" (printf "/%s" .name) -}}
{{- $_ := set $app.args "model" .name -}}
{{- $_ := set $app.logging_config "enable_access_log" $s.accessLog -}}
{{- $version := toString (default "" .stableVersion) -}}
{{- $stable := ternary nil $version (eq $version "") -}}
{{- range $app.deployments -}}
{{- if eq .name "stable" }}{{ $_ := set .user_config "model_version" $stable }}{{ include "shipyard.stableReplicas" (list . (int $root.Values.serve.stableMinReplicas)) }}{{ end -}}
{{- if eq .name "router" }}{{ $_ := set .user_config "stable_version" $stable }}{{ end -}}
{{- end -}}
{{- with get $live .name -}}
{{- include "shipyard.keepLiveRollout" (list $app .) -}}
{{- end -}}
{{- $apps = append $apps $app -}}
{{- end -}}
{{- range (rest $config.applications) -}}
{{- $_ := set .logging_config "enable_access_log" $s.accessLog -}}
{{- end -}}
{{- $_ := set $config "applications" (concat $apps (rest $config.applications)) -}}
{{- toYaml $config -}}
{{- end -}}

{{/* (list stableDeployment n): the stable predictor keeps n replicas up (and may
     scale to at least 4), as serving._predictor sets them. */}}
{{- define "shipyard.stableReplicas" -}}
{{- $scaling := (index . 0).autoscaling_config -}}
{{- $n := index . 1 -}}
{{- $_ := set $scaling "min_replicas" $n -}}
{{- $_ := set $scaling "initial_replicas" $n -}}
{{- $_ := set $scaling "max_replicas" (max 4 $n) -}}
{{- end -}}

{{/* The live RayService's applications by name, as JSON: {} when there is none or its
     serveConfigV2 does not parse. */}}
{{- define "shipyard.liveApps" -}}
{{- $byName := dict -}}
{{- if . -}}
{{- $apps := get (fromYaml .) "applications" -}}
{{- if kindIs "slice" $apps -}}
{{- range $apps -}}
{{- if kindIs "map" . }}{{ $_ := set $byName (toString (get . "name")) . }}{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $byName -}}
{{- end -}}

{{/* (list app liveApp): the rollout state a model's live application carries over into
     the rendered one, in place: each deployment's user_config (the versions and the
     canary weight) and the canary's replica floor (min_replicas, initial_replicas), the
     fields serving.with_rollout moves. Everything else comes from the values. */}}
{{- define "shipyard.keepLiveRollout" -}}
{{- $app := index . 0 -}}
{{- $liveDeps := dict -}}
{{- range (get (index . 1) "deployments" | default list) -}}
{{- if kindIs "map" . }}{{ $_ := set $liveDeps (toString (get . "name")) . }}{{ end -}}
{{- end -}}
{{- range $app.deployments -}}
{{- $dep := . -}}
{{- $was := get $liveDeps $dep.name -}}
{{- if and (kindIs "map" $was) (hasKey $was "user_config") -}}
{{- $_ := set $dep "user_config" (get $was "user_config") -}}
{{- $bounds := get $was "autoscaling_config" -}}
{{- if and (eq $dep.name "canary") (kindIs "map" $bounds) -}}
{{- range list "min_replicas" "initial_replicas" -}}
{{- if hasKey $bounds . }}{{ $_ := set $dep.autoscaling_config . (get $bounds .) }}{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
