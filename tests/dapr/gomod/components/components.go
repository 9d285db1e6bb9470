// Package components is the component set of the test daprd, in place of upstream's
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
	pubsubInMemory "github.com/dapr/components-contrib/pubsub/in-memory"
	stateInMemory "github.com/dapr/components-contrib/state/in-memory"
	pubsubLoader "github.com/dapr/dapr/pkg/components/pubsub"
	stateLoader "github.com/dapr/dapr/pkg/components/state"
)

func init() {
	// state.in-memory: the conversation-memory store the tests use.
	stateLoader.DefaultRegistry.RegisterComponent(stateInMemory.NewInMemoryStateStore, "in-memory")
	// pubsub.in-memory: costs nothing extra to link, handy for tests that publish events.
	pubsubLoader.DefaultRegistry.RegisterComponent(pubsubInMemory.New, "in-memory")
}
