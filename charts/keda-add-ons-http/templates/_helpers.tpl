{{/*
Object names are built from .Chart.Name, exactly as in the official chart, so they stay
keda-add-ons-http-* whatever the release is called: existing ScaledObjects hard-code
keda-add-ons-http-external-scaler.<namespace>:9090.
*/}}
{{- define "addon.name" -}}
{{- .Chart.Name -}}
{{- end -}}

{{- define "addon.interceptor.name" -}}{{ include "addon.name" . }}-interceptor{{- end -}}
{{- define "addon.scaler.name" -}}{{ include "addon.name" . }}-{{ .Values.scaler.service }}{{- end -}}
{{- define "addon.operator.name" -}}{{ include "addon.name" . }}-controller-manager{{- end -}}
{{- define "addon.interceptor.adminService" -}}{{ include "addon.name" . }}-{{ .Values.interceptor.admin.service }}{{- end -}}
{{- define "addon.interceptor.proxyService" -}}{{ include "addon.name" . }}-{{ .Values.interceptor.proxy.service }}{{- end -}}

{{/* Selector labels: stable, never include the version. Call with (dict "ctx" $ "component" "x"). */}}
{{- define "addon.selectorLabels" -}}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/name: http-add-on
app.kubernetes.io/part-of: {{ .ctx.Chart.Name }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end -}}

{{/* Full labels for objects and pods. Call with (dict "ctx" $ "component" "x"). */}}
{{- define "addon.labels" -}}
{{ include "addon.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Values.images.tag | default .ctx.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- with .ctx.Values.additionalLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Image reference. Call with (dict "ctx" $ "repo" .Values.images.x). */}}
{{- define "addon.image" -}}
{{ .repo }}:{{ .ctx.Values.images.tag | default .ctx.Chart.AppVersion }}
{{- end -}}

{{/* Container securityContext: the per-component override, else the shared one. */}}
{{- define "addon.securityContext" -}}
{{- $sc := .ctx.Values.securityContext -}}
{{- $own := get $sc .component -}}
{{- if $own -}}
{{ toYaml $own }}
{{- else -}}
{{ toYaml (omit $sc "operator" "scaler" "interceptor") }}
{{- end -}}
{{- end -}}

{{/* Pod securityContext: the per-component override, else the shared one. */}}
{{- define "addon.podSecurityContext" -}}
{{- $sc := .ctx.Values.podSecurityContext -}}
{{- $own := get $sc .component -}}
{{- if $own -}}
{{ toYaml $own }}
{{- else -}}
{{ toYaml (omit $sc "operator" "scaler" "interceptor") }}
{{- end -}}
{{- end -}}

{{/* --zap-* logging flags. Call with a logging.<component> map. */}}
{{- define "addon.zapArgs" -}}
- --zap-log-level={{ .level }}
- --zap-encoder={{ .format }}
- --zap-time-encoding={{ .timeEncoding }}
{{- if .stackTracesEnabled }}
- --zap-stacktrace-level=error
{{- end }}
{{- end -}}

{{/* Scheduling and pod extras shared by all three Deployments. Call with a component's values. */}}
{{- define "addon.podExtras" -}}
nodeSelector:
  kubernetes.io/os: linux
  {{- with .nodeSelector }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* extraEnvs map -> env entries. */}}
{{- define "addon.extraEnvs" -}}
{{- range $k, $v := . }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}

{{/*
Go duration ("1m30s", "500ms", "5s") to seconds as a float; "" and "0" are 0.
Fails the render on anything else, naming the value key.
Call with (dict "key" "interceptor.drainTimeout" "value" .Values.interceptor.drainTimeout).
*/}}
{{- define "addon.durationSeconds" -}}
{{- $v := toString .value | trim -}}
{{- if or (eq $v "") (eq $v "0") -}}
0
{{- else -}}
{{- if not (regexMatch "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$" $v) -}}
{{- fail (printf "%s: %q is not a Go duration such as 500ms, 5s, 1m30s" .key $v) -}}
{{- end -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" $v -1 -}}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" . | float64 -}}
{{- $unit := regexReplaceAll "^[0-9]+(\\.[0-9]+)?" . "" -}}
{{- $scale := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 -}}
{{- $total = addf $total (mulf $num (get $scale $unit)) -}}
{{- end -}}
{{- $total -}}
{{- end -}}
{{- end -}}
