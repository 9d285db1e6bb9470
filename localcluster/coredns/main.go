// Command coredns is CoreDNS with only the plugins the local cluster's DNS uses (localcluster/dns.py),
// wired the way upstream's core/plugin/zplugin.go and core/dnsserver/zdirectives.go wire all of
// them. No forward (nor any plugin that asks another server): a name outside the cluster gets an
// answer from the template plugin at once, and nothing outside this machine is ever asked.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

// directives is the order the plugins run in: upstream's order, less what is not linked.
var directives = []string{
	"bind",
	"ready",
	"errors",
	"log",
	"template",
	"kubernetes",
}

func main() {
	dnsserver.Directives = directives
	coremain.Run()
}
