// Command dapr is Dapr's control plane and sidecar in one static binary, busybox style: one link
// instead of six, one copy of the shared packages on disk. It runs the upstream command
// (github.com/dapr/dapr/cmd/<name>/app at the version pinned in ../versions.env) named by the
// base name of argv[0], so a link /daprd -> dapr is daprd; `dapr <name> [flags]` works too.
//
// The six apps coexist: each parses its flags from os.Args in its own Run (five with their own
// pflag sets; the operator with the standard library's global set, which only it parses), and
// their package init()s register nothing twice. daprd is upstream's app with this module's
// component set (see ./app and ./components).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	injector "github.com/dapr/dapr/cmd/injector/app"
	operator "github.com/dapr/dapr/cmd/operator/app"
	placement "github.com/dapr/dapr/cmd/placement/app"
	scheduler "github.com/dapr/dapr/cmd/scheduler/app"
	sentry "github.com/dapr/dapr/cmd/sentry/app"

	daprd "aiagent-operator/localcluster/dapr/app"
)

var commands = map[string]func(){
	"daprd":     daprd.Run,
	"injector":  injector.Run,
	"operator":  operator.Run,
	"placement": placement.Run,
	"scheduler": scheduler.Run,
	"sentry":    sentry.Run,
}

func main() {
	if run, ok := commands[filepath.Base(os.Args[0])]; ok {
		run()
		return
	}
	if len(os.Args) > 1 {
		if run, ok := commands[os.Args[1]]; ok {
			// The app sees itself as argv[0] and its own flags after it, as if called by name.
			os.Args = os.Args[1:]
			run()
			return
		}
	}
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: %s <%s> [flags]  (or call it through a link of that name)\n",
		filepath.Base(os.Args[0]), strings.Join(names, "|"))
	os.Exit(2)
}
