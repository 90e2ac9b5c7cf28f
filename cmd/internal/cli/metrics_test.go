package cli

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMetrics runs a hub and a device with --metrics, makes them do a
// little of everything, and scrapes both: every metric docs/METRICS.md
// lists is served, with the values the scenario implies, and no label
// names a device.
func TestMetrics(t *testing.T) {
	dir := t.TempDir()
	env := append(os.Environ(), "HOME="+dir, "GORACE=atexit_sleep_ms=0")
	hubDir, devDir := filepath.Join(dir, "hub"), filepath.Join(dir, "laptop")
	ports := make([]int, 4)
	for i := range ports {
		p, ok := freePort()
		if !ok {
			t.Fatal("no free port")
		}
		ports[i] = p
	}
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	run(t, env, "", "pzh", "--data", hubDir, "init", "--zone", "home", "--public-addr", addr(0))
	daemon(t, env, "pzh", "--data", hubDir, "serve", "--metrics", addr(1), "--web", addr(3))
	run(t, env, "", "pzh", "--data", hubDir, "wait", "ready")
	token := strings.TrimSpace(run(t, env, "", "pzh", "--data", hubDir, "invite", "--device", "laptop"))
	run(t, env, "", "pzp", "--data", devDir, "pair", token)
	daemon(t, env, "pzp", "--data", devDir, "run", "--metrics", addr(2))
	run(t, env, "", "pzp", "--data", devDir, "wait", "synced")
	daemon(t, env, "pzp", "--data", devDir, "serve", "echo")
	run(t, env, "", "pzh", "--data", hubDir, "wait", "online", "laptop")
	// A call through the hub (no direct path to itself: it is local), a
	// refused one, a failed web login.
	// Until pzp serve has registered echo: each try is a whole command.
	for deadline := time.Now().Add(2 * time.Minute); ; {
		out, err := runErr(env, "pzp", "--data", devDir, "call", "laptop/echo", "echo", `"hi"`)
		if err == nil && strings.Contains(out, "hi") {
			break
		}
		if err == nil || !strings.Contains(out, "not running") || time.Now().After(deadline) {
			t.Fatalf("pzp call: %v %s", err, out)
		}
	}
	runErr(env, "pzp", "--data", devDir, "call", "desk/echo", "echo", `"hi"`)
	resp, err := http.Post("http://"+addr(3)+"/api/v1/authenticate", "application/json", strings.NewReader(`{"name":"x","password":"not this one"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	hub := scrape(t, addr(1))
	dev := scrape(t, addr(2))
	for name, want := range map[string]string{
		`pzh_devices{state="online"}`:                     "1",
		`pzh_sessions{transport="quic"}`:                  "1",
		`pzh_session_admissions_total{result="admitted"}`: "",
		`pzh_calls_routed_total{kind="call"}`:             "",
		`pzh_call_refusals_total{status="not_found"}`:     "1",
		`pzh_web_logins_total{result="password_bad"}`:     "1",
		`pzp_session_state{state="online"}`:               "1",
		`pzp_session_state{state="connecting"}`:           "0",
		`pzp_session_transport{transport="quic"}`:         "1",
		`pzp_sync_pending_edits`:                          "0",
	} {
		text := hub
		if strings.HasPrefix(name, "pzp_") {
			text = dev
		}
		got, ok := sample(text, name)
		if !ok || want != "" && got != want {
			t.Errorf("%s = %q (served: %v), want %q", name, got, ok, want)
		}
	}
	if strings.Contains(hub, "laptop") || strings.Contains(dev, "laptop") {
		t.Error("a metric names the device")
	}
	// Every metric documented is served (those with labels once their
	// first event happened: a session closes last).
	run(t, env, "", "pzh", "--data", hubDir, "revoke", "laptop")
	run(t, env, "", "pzh", "--data", hubDir, "wait", "revoked", "laptop")
	hub = scrape(t, addr(1))
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "METRICS.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile("`(pz[hp]_[a-z_]+)`").FindAllStringSubmatch(string(doc), -1) {
		text := hub
		if strings.HasPrefix(m[1], "pzp_") {
			text = dev
		}
		if !strings.Contains(text, "# HELP "+m[1]+" ") {
			t.Errorf("docs/METRICS.md lists %s, which is not served", m[1])
		}
	}
	for _, text := range []string{hub, dev} {
		for _, m := range regexp.MustCompile(`(?m)^# HELP (pz[hp]_[a-z_]+) `).FindAllStringSubmatch(text, -1) {
			if !strings.Contains(string(doc), "`"+m[1]+"`") {
				t.Errorf("%s is served but not in docs/METRICS.md", m[1])
			}
		}
	}
}

// runErr runs a command to its end and returns its output and error.
func runErr(env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %v", addr, resp.StatusCode, err)
	}
	return string(b)
}

// sample is the value of the series name (with its labels, as served).
func sample(text, name string) (string, bool) {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v, true
		}
	}
	return "", false
}
