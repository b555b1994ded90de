{{/*
The operator's pod, shared by the Deployment (standalone) and the StatefulSet (peering).
*/}}
{{- define "modelrollout-operator.args" -}}
- --log-format={{ .Values.logFormat }}
{{- /* kopf's health endpoint answers once the operator has started; all probes use it. */}}
- --liveness=http://0.0.0.0:8081/healthz
- --metrics-port=8080
- --allowed-addresses={{ .Values.allowedAddresses }}
{{- if .Values.notifications.receiversSecret }}
- --receivers=/etc/modelrollout/receivers/receivers.yaml
{{- end }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- if eq .Values.highAvailability.mode "leaderElection" }}
- --leader-election={{ include "modelrollout-operator.leaseName" . }}
- --leader-election-namespace={{ .Release.Namespace }}
{{- end }}
{{- if eq .Values.highAvailability.mode "peering" }}
- --peering={{ .Values.highAvailability.peeringName }}
{{- /*
kopf pauses every replica that sees a peer of higher or EQUAL priority, so equal
priorities would freeze them all. The StatefulSet ordinal is distinct per pod and
reaches the arguments through an environment variable ($(VAR) is expanded by the
kubelet, no shell needed).
*/}}
- --priority=$(POD_INDEX)
{{- end }}
{{- if .Values.verbose }}
- --verbose
{{- end }}
{{- with .Values.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "modelrollout-operator.podTemplate" -}}
metadata:
  labels:
    {{- include "modelrollout-operator.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "modelrollout-operator.serviceAccountName" . }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- /*
  A rollout being deleted first gets its traffic back to the stable model; the
  operator may take up to half a minute to finish that (kopf's daemon cancellation
  backoff plus timeout) before it exits, longer than Kubernetes' default 30s.
  */}}
  terminationGracePeriodSeconds: 60
  containers:
    - name: operator
      image: {{ include "modelrollout-operator.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command: [python, -m, modelrollout]
      args:
        {{- include "modelrollout-operator.args" . | nindent 8 }}
      env:
        {{- /* The root filesystem is read-only: do not even try to write .pyc files. */}}
        - name: PYTHONDONTWRITEBYTECODE
          value: "1"
        - name: PYTHONUNBUFFERED
          value: "1"
        {{- if eq .Values.highAvailability.mode "leaderElection" }}
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        {{- if eq .Values.highAvailability.mode "peering" }}
        - name: POD_INDEX
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
        {{- end }}
      ports:
        - name: http-metrics
          containerPort: 8080
          protocol: TCP
        - name: health
          containerPort: 8081
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /healthz
          port: health
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /healthz
          port: health
        periodSeconds: 5
        timeoutSeconds: 5
      {{- /* Generous, so a slow API server at start is not mistaken for a hung operator. */}}
      startupProbe:
        httpGet:
          path: /healthz
          port: health
        periodSeconds: 5
        failureThreshold: 24
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- /* The only writable path: the analysis writes Prometheus CA bundles to temp files. */}}
        - name: tmp
          mountPath: /tmp
        {{- if .Values.notifications.receiversSecret }}
        - name: receivers
          mountPath: /etc/modelrollout/receivers
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- with .Values.notifications.receiversSecret }}
    - name: receivers
      secret:
        secretName: {{ . }}
        items:
          - key: receivers.yaml
            path: receivers.yaml
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
