package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// previousRelease is the last commit whose hub and device speak the
// session version before this one (2: no federation), built from this
// repository's own history as the release a person upgrades from.
const previousRelease = "1bbc420b43560eb223bccd219438e9054b8ec0c0"

// buildPrevious builds pzh and pzp of previousRelease (once per machine:
// they are kept in the user's cache directory) and returns their
// directory. Without the repository's history (a shallow clone, a source
// archive) there is nothing to build, and the test says so.
func buildPrevious(t *testing.T) string {
	t.Helper()
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a git checkout (%v): the previous release is built from the repository's history", err)
	}
	repo := strings.TrimSpace(string(top))
	if err := exec.Command("git", "-C", repo, "cat-file", "-e", previousRelease+"^{commit}").Run(); err != nil {
		t.Skipf("commit %s (the previous release) is not in this clone (shallow?): fetch the full history to run this test", previousRelease[:12])
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = t.TempDir()
	}
	dir := filepath.Join(cache, "pzone-test", "release-"+previousRelease[:12])
	bin := filepath.Join(dir, "bin")
	if _, err := os.Stat(filepath.Join(bin, "pzp")); err == nil {
		return bin
	}
	src := filepath.Join(dir, "src")
	os.RemoveAll(dir)
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", repo, previousRelease, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("extract the previous release: %v\n%s", err, out)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "bin.new")+"/", "./cmd/pzh", "./cmd/pzp")
	build.Dir = src
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the previous release: %v\n%s", err, out)
	}
	// In place only when whole, so a build cut short is not taken later.
	if err := os.Rename(filepath.Join(dir, "bin.new"), bin); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(src)
	return bin
}

// TestPreviousRelease: a hub and a device one session version apart work
// together, each way round. A device of the previous release pairs with
// this hub, syncs both ways, and is named by pzh devices and pzh status
// as on another version; a device of this release pairs with a hub of the
// previous one and syncs both ways.
func TestPreviousRelease(t *testing.T) {
	old := buildPrevious(t)
	oldPZH, oldPZP := filepath.Join(old, "pzh"), filepath.Join(old, "pzp")
	dir := t.TempDir()
	env := append(os.Environ(), "HOME="+dir, "GORACE=atexit_sleep_ms=0")

	zone := func(t *testing.T, pzh, pzp, name string) {
		t.Helper()
		port, ok := freePort()
		if !ok {
			t.Fatal("no free port")
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		hubDir, devDir := filepath.Join(dir, name, "hub"), filepath.Join(dir, name, "dev")
		run(t, env, "", pzh, "--data", hubDir, "init", "--zone", name, "--public-addr", addr)
		daemon(t, env, pzh, "--data", hubDir, "serve", "--listen", addr)
		run(t, env, "", pzh, "--data", hubDir, "wait", "ready", "--timeout", "30s")
		token := strings.TrimSpace(run(t, env, "", pzh, "--data", hubDir, "invite", "--device", "dev"))
		run(t, env, "", pzp, "--data", devDir, "pair", token)
		daemon(t, env, pzp, "--data", devDir, "run")
		run(t, env, "", pzh, "--data", hubDir, "wait", "online", "dev", "--timeout", "60s")
		// Device to hub, hub to device.
		run(t, env, "", pzp, "--data", devDir, "data", "set", "notes/from-dev", "hello hub")
		run(t, env, "", pzp, "--data", devDir, "wait", "synced", "--timeout", "60s")
		if got := run(t, env, "", pzh, "--data", hubDir, "data", "get", "notes/from-dev"); strings.TrimSpace(got) != "hello hub" {
			t.Fatalf("the hub has %q of the device's edit", got)
		}
		run(t, env, "", pzh, "--data", hubDir, "data", "set", "notes/from-hub", "hello device")
		// wait synced holds until the device has the hub's head as it
		// last heard of it, which may be from before the edit: ask again
		// until the edit is there.
		for deadline := time.Now().Add(2 * time.Minute); ; {
			run(t, env, "", pzp, "--data", devDir, "wait", "synced", "--timeout", "60s")
			got, err := runErr(env, pzp, "--data", devDir, "data", "get", "notes/from-hub")
			if err == nil && strings.TrimSpace(got) == "hello device" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the hub's edit did not reach the device: %v %s", err, got)
			}
		}
		if pzh == "pzh" {
			var devs []struct {
				Name         string `json:"name"`
				Protocol     uint   `json:"protocol"`
				OtherVersion bool   `json:"other_version"`
			}
			if err := json.Unmarshal([]byte(run(t, env, "", pzh, "--data", hubDir, "devices", "--json")), &devs); err != nil {
				t.Fatal(err)
			}
			if len(devs) != 1 || devs[0].Protocol != 2 || !devs[0].OtherVersion {
				t.Errorf("pzh devices: %+v, want the device on protocol 2, named as another version", devs)
			}
			if st := run(t, env, "", pzh, "--data", hubDir, "status"); !strings.Contains(st, "other pzp") || !strings.Contains(st, "dev") {
				t.Errorf("pzh status does not name the older device:\n%s", st)
			}
		}
	}
	t.Run("older device", func(t *testing.T) { zone(t, "pzh", oldPZP, "newhub") })
	t.Run("older hub", func(t *testing.T) { zone(t, oldPZH, "pzp", "oldhub") })
}
