package cli

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// netLab is a small network of namespaces the test makes, for the fault
// matrix (faults_test.go): a hub in one namespace, devices in another
// behind a router namespace that forwards and masquerades (a home NAT),
// joined by veth links:
//
//	hub ns  h0 10.77.1.2 ──── r0 10.77.1.1  router ns  r1 10.77.2.1 ──── d0 10.77.2.2+  dev ns
//
// The router's nftables table "faults" drops what a test asks (a share
// of packets, all UDP), its link to the devices goes down and up, and its
// masquerade changes the source port range (a NAT that rebinds). Nothing
// in it reaches any address outside the namespaces; deleting them at the
// test's end deletes the links with them.
type netLab struct {
	t             *testing.T
	hub, rtr, dev string // namespace names
	// netem: the kernel has tc's netem, for delay (otherwise a delay
	// line of the test's own).
	netem bool
}

// Addresses in the lab.
const (
	labHubIP = "10.77.1.2"
	labDevIP = "10.77.2.2"
)

// requireNetLab skips a test that needs the lab where it cannot be made:
// not root, or without ip and nft.
func requireNetLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("fault matrix: needs root to make network namespaces (run make faults as root)")
	}
	for _, tool := range []string{"ip", "nft", "conntrack"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("fault matrix: %s is not installed (Debian packages iproute2, nftables, conntrack; .ci/run installs them)", tool)
		}
	}
}

// labs numbers the labs of this process: rows run in parallel.
var labs atomic.Int64

func newNetLab(t *testing.T) *netLab {
	t.Helper()
	requireNetLab(t)
	id := fmt.Sprintf("pz%dn%d", os.Getpid(), labs.Add(1))
	l := &netLab{t: t, hub: id + "h", rtr: id + "r", dev: id + "d"}
	// Registered first, so it runs last: after the daemons are stopped.
	t.Cleanup(func() {
		for _, ns := range []string{l.dev, l.rtr, l.hub} {
			exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	for _, ns := range []string{l.hub, l.rtr, l.dev} {
		l.must("ip", "netns", "add", ns)
		l.in(ns, "ip", "link", "set", "lo", "up")
	}
	l.must("ip", "link", "add", "h0", "netns", l.hub, "type", "veth", "peer", "name", "r0", "netns", l.rtr)
	l.must("ip", "link", "add", "d0", "netns", l.dev, "type", "veth", "peer", "name", "r1", "netns", l.rtr)
	l.in(l.hub, "ip", "addr", "add", labHubIP+"/24", "dev", "h0")
	l.in(l.rtr, "ip", "addr", "add", "10.77.1.1/24", "dev", "r0")
	l.in(l.rtr, "ip", "addr", "add", "10.77.2.1/24", "dev", "r1")
	l.in(l.dev, "ip", "addr", "add", labDevIP+"/24", "dev", "d0")
	for ns, dev := range map[string]string{l.hub: "h0", l.dev: "d0"} {
		l.in(ns, "ip", "link", "set", dev, "up")
	}
	l.in(l.rtr, "ip", "link", "set", "r0", "up")
	l.in(l.rtr, "ip", "link", "set", "r1", "up")
	l.in(l.dev, "ip", "route", "add", "default", "via", "10.77.2.1")
	l.in(l.rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	l.nft(`table ip nat {
	chain post { type nat hook postrouting priority 100; oifname "r0" masquerade; }
}
table inet faults {
	chain forward { type filter hook forward priority 0; }
}`)
	l.netem = exec.Command("ip", "netns", "exec", l.rtr, "tc", "qdisc", "add", "dev", "r1", "root", "netem", "delay", "0ms").Run() == nil
	if l.netem {
		l.in(l.rtr, "tc", "qdisc", "del", "dev", "r1", "root")
	}
	return l
}

// must runs a command of the lab's making.
func (l *netLab) must(name string, args ...string) string {
	l.t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// in runs a command in namespace ns.
func (l *netLab) in(ns string, args ...string) string {
	l.t.Helper()
	return l.must("ip", append([]string{"netns", "exec", ns}, args...)...)
}

// nft loads rules into the router's nftables.
func (l *netLab) nft(rules string) {
	l.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", l.rtr, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("nft: %v\n%s\n%s", err, out, rules)
	}
}

// cmd is args run in namespace ns, for daemon and run.
func (l *netLab) cmd(ns string, args ...string) (string, []string) {
	return "ip", append([]string{"netns", "exec", ns}, args...)
}

// lossy drops pct % of the packets the router forwards, each way, and
// delays those to and from the devices by delay (e.g. "100ms 20ms": 100
// ms ± 20 ms each way), with netem where the kernel has it, else with a
// delay line (delayline_test.go). It returns what it did.
func (l *netLab) lossy(pct int, delay string) string {
	l.t.Helper()
	// Once per packet: with a delay line a packet is forwarded twice,
	// into the line and out of it.
	l.nft(fmt.Sprintf("flush chain inet faults forward\nadd rule inet faults forward iifname { \"r0\", \"r1\" } numgen random mod 100 < %d counter drop\n", pct))
	if delay == "" {
		return fmt.Sprintf("%d %% loss", pct)
	}
	if !l.netem {
		mean, jitter, err := parseDelay(delay)
		if err != nil {
			l.t.Fatal(err)
		}
		l.startDelayLine(mean, jitter)
		return fmt.Sprintf("%d %% loss, delay %s each way (a delay line: this kernel has no netem)", pct, delay)
	}
	// On the device's link, both ways: the router's side and the device's.
	netem := append([]string{"tc", "qdisc", "add", "dev", "", "root", "netem", "delay"}, strings.Fields(delay)...)
	netem[4] = "r1"
	l.in(l.rtr, netem...)
	netem[4] = "d0"
	l.in(l.dev, netem...)
	return fmt.Sprintf("%d %% loss, delay %s each way (netem)", pct, delay)
}

// parseDelay reads netem's "MEAN [JITTER]".
func parseDelay(s string) (mean, jitter time.Duration, err error) {
	f := strings.Fields(s)
	if len(f) == 0 || len(f) > 2 {
		return 0, 0, fmt.Errorf("delay %q: want MEAN [JITTER]", s)
	}
	if mean, err = time.ParseDuration(f[0]); err == nil && len(f) == 2 {
		jitter, err = time.ParseDuration(f[1])
	}
	return mean, jitter, err
}

// blockUDP drops every UDP packet the router forwards.
func (l *netLab) blockUDP() {
	l.t.Helper()
	l.nft("flush chain inet faults forward\nadd rule inet faults forward meta l4proto udp counter drop\n")
}

// devLink takes the devices' link down or up.
func (l *netLab) devLink(up bool) { l.t.Helper(); l.link("r1", up) }

// hubLink takes the hub's link down or up: the devices' namespace keeps
// its own traffic, and loses the hub's.
func (l *netLab) hubLink(up bool) { l.t.Helper(); l.link("r0", up) }

func (l *netLab) link(dev string, up bool) {
	l.t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	l.in(l.rtr, "ip", "link", "set", dev, state)
}

// rebind makes the router's NAT map the devices to new ports: the
// masquerade takes another port range and its mappings are forgotten.
func (l *netLab) rebind(from, to int) {
	l.t.Helper()
	l.nft(fmt.Sprintf("flush chain ip nat post\nadd rule ip nat post oifname \"r0\" meta l4proto { tcp, udp } masquerade to :%d-%d\n", from, to))
	l.in(l.rtr, "conntrack", "-F")
}

// dropped is how many packets the router's fault rules dropped so far.
func (l *netLab) dropped() int {
	out, _ := exec.Command("ip", "netns", "exec", l.rtr, "nft", "list", "chain", "inet", "faults", "forward").CombinedOutput()
	n := 0
	for _, m := range regexp.MustCompile(`counter packets (\d+)`).FindAllStringSubmatch(string(out), -1) {
		k, _ := strconv.Atoi(m[1])
		n += k
	}
	return n
}

// ruleset is the router's nftables rules, for a test that fails.
func (l *netLab) ruleset() string {
	out, _ := exec.Command("ip", "netns", "exec", l.rtr, "nft", "list", "ruleset").CombinedOutput()
	return string(bytes.TrimSpace(out))
}
