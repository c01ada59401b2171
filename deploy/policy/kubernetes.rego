# Policies on the rendered Kubernetes objects (input.objects, from `kustomize build`), and on
# docker compose services turned into the same shape (kind ComposeService, or ComposeJob for a
# one-shot service; deploy/check's compose.go): the container hardening the cluster's restricted Pod Security would demand, plus
# resource limits, probes and pinned images.
package sluice.kubernetes

import rego.v1

long_running := {"Deployment", "StatefulSet", "DaemonSet", "ComposeService"}

pod_spec(o) := o.spec.template.spec if o.kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

pod_spec(o) := o.spec.jobTemplate.spec.template.spec if o.kind == "CronJob"

pod_spec(o) := o.spec if o.kind in {"Pod", "ComposeService", "ComposeJob"}

containers(o) := array.concat(object.get(pod_spec(o), "containers", []), object.get(pod_spec(o), "initContainers", []))

violation(rule, o, c, text) := {"rule": rule, "msg": sprintf("%s %s, container %s: %s", [o.kind, o.metadata.name, c.name, text])}

csc(c) := object.get(c, "securityContext", {})

psc(o) := object.get(pod_spec(o), "securityContext", {})

deny contains v if {
	some o in input.objects
	some c in containers(o)
	not non_root(o, c)
	v := violation("k8s_non_root", o, c, "must run as non-root (runAsNonRoot: true, no runAsUser: 0)")
}

non_root(o, c) if {
	object.get(csc(c), "runAsNonRoot", object.get(psc(o), "runAsNonRoot", false)) == true
	object.get(csc(c), "runAsUser", object.get(psc(o), "runAsUser", 1)) != 0
}

deny contains v if {
	some o in input.objects
	some c in containers(o)
	object.get(csc(c), "readOnlyRootFilesystem", false) != true
	v := violation("k8s_read_only_root_fs", o, c, "root filesystem must be read-only (readOnlyRootFilesystem: true)")
}

deny contains v if {
	some o in input.objects
	some c in containers(o)
	not no_escalation(c)
	v := violation("k8s_no_privilege_escalation", o, c, "allowPrivilegeEscalation must be false and privileged unset")
}

no_escalation(c) if {
	object.get(csc(c), "allowPrivilegeEscalation", true) == false
	object.get(csc(c), "privileged", false) == false
}

deny contains v if {
	some o in input.objects
	some c in containers(o)
	not drops_all(c)
	v := violation("k8s_drop_capabilities", o, c, "capabilities must drop ALL and add none")
}

drops_all(c) if {
	caps := object.get(csc(c), "capabilities", {})
	"ALL" in object.get(caps, "drop", [])
	count(object.get(caps, "add", [])) == 0
}

deny contains v if {
	some o in input.objects
	some c in containers(o)
	not seccomp(o, c)
	v := violation("k8s_seccomp", o, c, "seccompProfile must be RuntimeDefault (or Localhost)")
}

seccomp(o, c) if {
	p := object.get(csc(c), "seccompProfile", object.get(psc(o), "seccompProfile", {}))
	p.type in {"RuntimeDefault", "Localhost"}
}

deny contains v if {
	some o in input.objects
	some c in containers(o)
	some kind in ["requests", "limits"]
	some res in ["cpu", "memory"]
	not c.resources[kind][res]
	v := violation("k8s_resources", o, c, sprintf("resources.%s.%s must be set", [kind, res]))
}

deny contains v if {
	some o in input.objects
	o.kind in long_running
	some c in object.get(pod_spec(o), "containers", [])
	some probe in ["livenessProbe", "readinessProbe"]
	not c[probe]
	v := violation("k8s_probes", o, c, sprintf("%s must be set", [probe]))
}

deny contains v if {
	some o in input.objects
	some c in containers(o)
	not pinned(c.image)
	v := violation("k8s_image_pinned", o, c, sprintf("image %q must name a version tag or a digest, not latest or nothing", [c.image]))
}

pinned(image) if contains(image, "@sha256:")

pinned(image) if {
	not contains(image, "@")
	parts := split(image, "/")
	last := parts[count(parts) - 1]
	contains(last, ":")
	tag := split(last, ":")[1]
	tag != "latest"
	tag != ""
}
