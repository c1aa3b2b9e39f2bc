{{/* The RayService's serveConfigV2: files/serve-config.json, written by
     platform/shipyard/serving.py (`make chart`), the same code that builds the local
     deploy's config; this install's values fill in the model, the MLflow URL, the Feast
     repo, the port and batching. (list $ liveText): when the RayService already exists
     (an upgrade), its live rollout state (each deployment's user_config: the versions
     and the canary weight, and the canary's replica floor) is kept, so a `helm upgrade`
     never undoes `shipyard deploy` or a rollout; serve.stableVersion only applies to a
     new RayService. */}}
{{- define "shipyard.serveConfig" -}}
{{- $root := index . 0 -}}
{{- $liveText := index . 1 -}}
{{- $s := $root.Values.serve -}}
{{- $config := $root.Files.Get "files/serve-config.json" | fromJson -}}
{{- $_ := set $config.http_options "port" (int $s.httpPort) -}}
{{- $app := index $config.applications 0 -}}
{{- $_ := set $app "name" $s.model -}}
{{- $_ := set $app "route_prefix" (printf "/%s" $s.model) -}}
{{- $args := $app.args -}}
{{- $_ := set $args "model" $s.model -}}
{{- $_ := set $args "tracking_uri" (include "shipyard.mlflowUrl" $root) -}}
{{- $_ := set $args "online_features" $s.onlineFeatures -}}
{{- $_ := set $args "feature_repo" (ternary (include "shipyard.feastRepoPath" $root) "" $s.onlineFeatures) -}}
{{- $_ := set $args "max_batch_size" (int $s.maxBatchSize) -}}
{{- $_ := set $args "batch_wait_timeout_s" $s.batchWaitTimeoutS -}}
{{- $stable := ternary nil (toString $s.stableVersion) (eq (toString $s.stableVersion) "") -}}
{{- range $app.deployments -}}
{{- if eq .name "stable" }}{{ $_ := set .user_config "model_version" $stable }}{{ end -}}
{{- if eq .name "router" }}{{ $_ := set .user_config "stable_version" $stable }}{{ end -}}
{{- end -}}
{{- if $liveText -}}
{{- $live := fromYaml $liveText -}}
{{- range (get $live "applications" | default list) -}}
{{- if and (kindIs "map" .) (eq (toString (get . "name")) (toString $s.model)) -}}
{{- $liveDeps := dict -}}
{{- range (get . "deployments" | default list) -}}
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
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
