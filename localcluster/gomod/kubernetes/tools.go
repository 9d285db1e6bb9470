//go:build tools

// Package tools pins the Kubernetes commands build.sh compiles, so `go mod tidy` keeps
// every module they need in go.sum. Never compiled: the build tag excludes it.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
