// Command daprd is upstream daprd (github.com/dapr/dapr/cmd/daprd at the version pinned in
// ../versions.env) with only the components registered in ./components.
package main

import (
	"aiagent-operator/tests/dapr/daprd/app"
)

func main() {
	app.Run()
}
