package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestServiceUnits: the systemd units in dist/ pass systemd-analyze
// verify (with the binary path pointed at one that exists here), run as
// their own user with the hardening the README promises, and do not
// restart a device whose session the hub ended for good (exit 3).
func TestServiceUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian package systemd; .ci/run installs it): the units in dist/ are not verified")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, u := range []struct {
		path, user string
		want       []string
	}{
		{"pzh.service", "", []string{"User=pzh", "StateDirectory=pzh", "ProtectSystem=strict", "NoNewPrivileges=yes", "Restart=on-failure", "Environment=PZH_DATA=/var/lib/pzh"}},
		{"pzp.service", "", []string{"User=pzp", "StateDirectory=pzp", "ProtectSystem=strict", "NoNewPrivileges=yes", "Restart=on-failure", "RestartPreventExitStatus=3"}},
		{"user/pzp.service", "--user", []string{"NoNewPrivileges=yes", "Restart=on-failure", "RestartPreventExitStatus=3", "WantedBy=default.target"}},
	} {
		b, err := os.ReadFile(filepath.Join("..", "..", "..", "dist", u.path))
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for _, w := range u.want {
			if !strings.Contains(text, "\n"+w) {
				t.Errorf("%s: no line %q", u.path, w)
			}
		}
		text = strings.NewReplacer("/usr/local/bin/pzh", self, "/usr/local/bin/pzp", self).Replace(text)
		name := filepath.Join(dir, strings.ReplaceAll(u.path, "/", "-"))
		if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"verify", "--man=no", name}
		if u.user != "" {
			args = append([]string{u.user}, args...)
		}
		cmd := exec.Command(analyze, args...)
		run := filepath.Join(dir, "run")
		os.MkdirAll(run, 0o700)
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+run)
		if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
