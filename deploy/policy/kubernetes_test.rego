package sluice.kubernetes_test

import rego.v1

import data.sluice.kubernetes

container := {
	"name": "app",
	"image": "registry.example.com/sluice/sluice-fetcher:0.1.0",
	"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
	"livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
	"readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
	"securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
}

deployment(c) := {
	"kind": "Deployment",
	"metadata": {"name": "d"},
	"spec": {"template": {"spec": {
		"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
		"containers": [c],
	}}},
}

rules(objs) := {v.rule | some v in kubernetes.deny with input as {"objects": objs}}

test_hardened_deployment_passes if {
	count(rules([deployment(container)])) == 0
}

test_container_overriding_run_as_non_root_fires if {
	c := json.patch(container, [{"op": "add", "path": "/securityContext/runAsNonRoot", "value": false}])
	"k8s_non_root" in rules([deployment(c)])
}

test_privileged_fires if {
	c := json.patch(container, [{"op": "add", "path": "/securityContext/privileged", "value": true}])
	"k8s_no_privilege_escalation" in rules([deployment(c)])
}

test_job_needs_no_probes if {
	c := json.remove(container, ["livenessProbe", "readinessProbe"])
	job := {"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": deployment(c).spec.template.spec}}}
	count(rules([job])) == 0
}

test_image_pins if {
	kubernetes.pinned("nats:2.12.1-alpine")
	kubernetes.pinned("registry.example.com:5000/sluice/sensor:1.2.3")
	kubernetes.pinned("busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	not kubernetes.pinned("registry.example.com:5000/sluice/sensor")
	not kubernetes.pinned("nats:latest")
	not kubernetes.pinned("nats")
}

test_compose_service_without_limits_fires if {
	c := json.remove(container, ["resources/limits"])
	svc := {"kind": "ComposeService", "metadata": {"name": "fetcher"}, "spec": deployment(c).spec.template.spec}
	"k8s_resources" in rules([svc])
}
