{{/* Names and labels shared by every template. */}}

{{- define "aiagent-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* release-chart, or the release alone when it already contains the chart name. */}}
{{- define "aiagent-operator.fullname" -}}
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

{{- define "aiagent-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aiagent-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "aiagent-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "aiagent-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: aiagent-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "aiagent-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aiagent-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "aiagent-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "aiagent-operator.agentImage" -}}
{{- printf "%s:%s" .Values.agentImage.repository (default .Chart.AppVersion .Values.agentImage.tag) }}
{{- end }}

{{/*
The rules the operator needs in every namespace it serves; the same list feeds the ClusterRole
(cluster mode) and each namespace's Role (namespaced mode). See rbac.yaml.
*/}}
{{- define "aiagent-operator.namespacedRules" -}}
# AIAgents: Kopf lists and watches them, and patches its bookkeeping annotations.
- apiGroups: [aiagents.dev]
  resources: [aiagents]
  verbs: [get, list, watch, patch]
# The operator writes status through the status subresource.
- apiGroups: [aiagents.dev]
  resources: [aiagents/status]
  verbs: [patch]
# Children carry ownerReferences with blockOwnerDeletion, which clusters running the
# OwnerReferencesPermissionEnforcement admission plugin only allow to those who may update this.
- apiGroups: [aiagents.dev]
  resources: [aiagents/finalizers]
  verbs: [update]
# Children: watched for drift and status, server-side applied (create for the first apply).
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [list, watch, create, patch]
# The Deployment is also read: for status when a reconcile finds it unchanged (and so applies
# nothing), and when a pod of the agent is stuck.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
# The autoscaler is also read and deleted when an AIAgent turns autoscaling off.
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
# Dapr Components: the ones an AIAgent declares (spec.dapr.stateStore/pubsub with a type) are
# created, applied, read (whose is it?) and deleted when dropped from the spec; every Component is
# watched (is the one a spec names there?). Harmless where Dapr is not installed.
- apiGroups: [dapr.io]
  resources: [components]
  verbs: [get, list, watch, create, patch, delete]
# Agent pods: watched (and listed while an agent is not ready) to report crash loops, image
# pull failures and whether their Dapr sidecar is injected and ready on the AIAgent.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# ModelConfigs: an AIAgent's spec.modelRef names one (model, endpoint, API key, budget); the
# operator watches them to render their agents again when one changes (it never writes them).
- apiGroups: [aiagents.dev]
  resources: [modelconfigs]
  verbs: [get, list, watch]
# Secrets: the API key Secret an agent names is read (does it exist, has it the key?); a
# ModelConfig's key is copied into a Secret the operator manages in each agent's namespace
# (created, patched, deleted with the last agent that uses it); Secrets are watched so that a
# rotated key reaches the agents' pods (their template carries a digest of its version).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
# NetworkPolicies: one per AIAgent that asks for it (spec.networkPolicy, or the default
# agentDefaults.networkPolicy), server-side applied, watched for drift, deleted when turned off.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
# Kopf's Events on the AIAgent (the operator posts warnings a person must act on); a repeated
# Event is patched (its count), through either Events API.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
