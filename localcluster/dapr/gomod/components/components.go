// Package components is the component set of our daprd, in place of upstream's
// github.com/dapr/dapr/cmd/daprd/components.
//
// Upstream registers each of its ~150 components in its own file behind the `allcomponents` or
// `stablecomponents` build tag, so any daprd built from it links every component and its cloud
// SDK (and several of those module versions are not served by the module proxy). The wrapper's
// app package (upstream's cmd/daprd/app, copied by gen-gomod.sh) imports this package instead,
// so daprd links only what is registered here. Add a component: copy the registration from
// upstream's cmd/daprd/components/<kind>_<name>.go, then run gen-gomod.sh.
package components

import (
	nrKubernetes "github.com/dapr/components-contrib/nameresolution/kubernetes"
	pubsubInMemory "github.com/dapr/components-contrib/pubsub/in-memory"
	pubsubRedis "github.com/dapr/components-contrib/pubsub/redis"
	secretstoresKubernetes "github.com/dapr/components-contrib/secretstores/kubernetes"
	stateInMemory "github.com/dapr/components-contrib/state/in-memory"
	stateRedis "github.com/dapr/components-contrib/state/redis"
	nrLoader "github.com/dapr/dapr/pkg/components/nameresolution"
	pubsubLoader "github.com/dapr/dapr/pkg/components/pubsub"
	secretstoresLoader "github.com/dapr/dapr/pkg/components/secretstores"
	stateLoader "github.com/dapr/dapr/pkg/components/state"
)

func init() {
	// state: in-memory for tests and single-replica agents, redis for agents whose replicas share
	// conversations.
	stateLoader.DefaultRegistry.RegisterComponent(stateInMemory.NewInMemoryStateStore, "in-memory")
	stateLoader.DefaultRegistry.RegisterComponent(stateRedis.NewRedisStateStore, "redis")
	// pubsub: the same two.
	pubsubLoader.DefaultRegistry.RegisterComponent(pubsubInMemory.New, "in-memory")
	pubsubLoader.DefaultRegistry.RegisterComponent(pubsubRedis.NewRedisStreams, "redis")
	// secretstores.kubernetes: in Kubernetes mode daprd resolves components' secretKeyRef values
	// through this built-in store (it is also what `secretstores.kubernetes` components name).
	secretstoresLoader.DefaultRegistry.RegisterComponent(secretstoresKubernetes.NewKubernetesSecretStore, "kubernetes")
	// nameresolution.kubernetes: the default resolver in Kubernetes mode (service invocation
	// between app ids). Not mdns, self-hosted mode's default, though it would link cheaply: it
	// multicasts the app on every interface of the host, and a test sidecar must send nothing
	// off this machine. Self-hosted daprd then logs that mdns is missing and goes on without
	// service invocation.
	nrLoader.DefaultRegistry.RegisterComponent(nrKubernetes.NewResolver, "kubernetes")
}
