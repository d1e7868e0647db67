{{/* Names, labels and the settings that several templates share. */}}

{{- define "audioprocessor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "audioprocessor.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "audioprocessor.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "audioprocessor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: audioprocessor
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "operator"). */}}
{{- define "audioprocessor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "audioprocessor.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "audioprocessor.componentLabels" -}}
{{ include "audioprocessor.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "audioprocessor.operator.fullname" -}}
{{- printf "%s-operator" (include "audioprocessor.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "audioprocessor.api.fullname" -}}
{{- printf "%s-api" (include "audioprocessor.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "audioprocessor.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "audioprocessor.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}
{{- define "audioprocessor.api.serviceAccountName" -}}
{{- if .Values.api.serviceAccount.create }}
{{- default (include "audioprocessor.api.fullname" .) .Values.api.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.api.serviceAccount.name }}
{{- end }}
{{- end }}
{{- define "audioprocessor.job.serviceAccountName" -}}
{{- if .Values.job.serviceAccount.create }}
{{- default (printf "%s-job" (include "audioprocessor.fullname" .)) .Values.job.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.job.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Images: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "audioprocessor.image" -}}
{{- printf "%s:%s" .image.repository (default .default .image.tag) }}
{{- end }}

{{/* Namespaces the operator reconciles (a list). */}}
{{- define "audioprocessor.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces }}
{{- toJson .Values.operator.watchNamespaces }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/* Storage. */}}
{{- define "audioprocessor.pvcName" -}}
{{- default (printf "%s-output" (include "audioprocessor.fullname" .)) .Values.storage.pvc.existingClaim }}
{{- end }}
{{- define "audioprocessor.outputUri" -}}
{{- if .Values.storage.outputUri }}
{{- .Values.storage.outputUri }}
{{- else if eq .Values.storage.type "s3" }}
{{- printf "s3://%s/%s" .Values.storage.s3.bucket (.Values.storage.s3.prefix | trimAll "/") | trimSuffix "/" }}
{{- else }}
{{- printf "file://%s/audioproc" (.Values.storage.pvc.mountPath | trimSuffix "/") }}
{{- end }}
{{- end }}

{{/* S3 settings of the facade (it reads manifests); credentials come from the Secret. The
bucket is no setting: it is in the output URI (audioprocessor.outputUri). */}}
{{- define "audioprocessor.s3Env" -}}
{{- if eq .Values.storage.type "s3" }}
- name: S3_REGION
  value: {{ .Values.storage.s3.region | quote }}
{{- with .Values.storage.s3.endpointUrl }}
- name: S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The writable scratch every read-only-root container gets at /tmp. */}}
{{- define "audioprocessor.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end }}

{{- define "audioprocessor.api.jobNamespace" -}}
{{- default (first (include "audioprocessor.watchNamespaces" . | fromJsonArray)) .Values.api.jobNamespace }}
{{- end }}

{{/* A map of Kubernetes quantities as a JSON object of strings (the operator's dict[str, str]). */}}
{{- define "audioprocessor.quantities" -}}
{{- $out := dict }}
{{- range $k, $v := . }}{{- $_ := set $out $k (toString $v) }}{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
Environment of the worker pods, as the JSON object OPERATOR_JOB_ENV. Not ALLOWED_ROOTS: the
operator sets it from OPERATOR_ALLOWED_ROOTS (inputs.allowedRoots) and the volumes it mounts.
*/}}
{{- define "audioprocessor.jobEnv" -}}
{{- range $k, $v := .Values.job.env }}
{{- if eq (upper $k) "ALLOWED_ROOTS" }}{{- fail "job.env must not set ALLOWED_ROOTS: set inputs.allowedRoots (the operator adds the paths of the volumes it mounts)" }}{{- end }}
{{- end }}
{{- $env := dict }}
{{- if eq .Values.storage.type "s3" }}
{{- $_ := set $env "S3_REGION" .Values.storage.s3.region }}
{{- with .Values.storage.s3.endpointUrl }}{{- $_ := set $env "S3_ENDPOINT_URL" . }}{{- end }}
{{- end }}
{{- with .Values.job.clapCheckpoint }}{{- $_ := set $env "CLAP_CHECKPOINT" . }}{{- end }}
{{- range $k, $v := .Values.job.env }}{{- $_ := set $env $k (toString $v) }}{{- end }}
{{- toJson $env }}
{{- end }}

{{/*
Development live reload (Tilt): Python sources live in a writable emptyDir that an init
container fills from the image; Tilt syncs changed files into it and a file watcher
restarts the process. The root filesystem stays read-only.
Include with (dict "ctx" $ "packages" (list "audioproc" "audioproc_operator")).
*/}}
{{- define "audioprocessor.dev.srcDir" -}}/opt/audioproc/src{{- end }}
{{- define "audioprocessor.dev.initContainer" -}}
{{- $src := include "audioprocessor.dev.srcDir" .ctx -}}
- name: copy-sources
  image: {{ .image }}
  imagePullPolicy: {{ .pullPolicy }}
  command:
    - python
    - -c
    - |
      import importlib, pathlib, shutil
      for name in {{ toJson .packages }}:
          package = pathlib.Path(importlib.import_module(name).__file__).parent
          shutil.copytree(package, pathlib.Path({{ $src | quote }}) / name, dirs_exist_ok=True)
  securityContext:
    {{- toYaml .ctx.Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    - name: dev-src
      mountPath: {{ $src }}
{{- end }}
