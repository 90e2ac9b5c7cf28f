package cli

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func daemonCmd(t *testing.T, root *cobra.Command, name string) *cobra.Command {
	t.Helper()
	c, _, err := root.Find([]string{name})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConfigExample: the example file, every setting uncommented, is a
// valid config for both daemons: every key is a setting and every default
// a value it takes.
func TestConfigExample(t *testing.T) {
	for _, c := range []struct {
		root   *cobra.Command
		daemon string
		prefix string
	}{{HubCommand(), "serve", "PZH"}, {PeerCommand(), "run", "PZP"}} {
		cmd := daemonCmd(t, c.root, c.daemon)
		var b bytes.Buffer
		if err := writeExample(&b, cmd, c.prefix); err != nil {
			t.Fatal(err)
		}
		text := regexp.MustCompile(`(?m)^# ([a-z-]+ = )`).ReplaceAllString(b.String(), "$1")
		if strings.Count(text, " = ") < 10 {
			t.Fatalf("%s: example has few settings:\n%s", c.daemon, text)
		}
		if err := applyFile("example.toml", []byte(text), configFlags(cmd), map[string]bool{}); err != nil {
			t.Fatalf("%s: the example, uncommented: %v\n%s", c.daemon, err, text)
		}
	}
}

// TestConfigFile: unknown keys and bad values name the key and line; the
// command line beats the environment, which beats the file.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct{ text, want string }{
		{"listen = \"127.0.0.1:1\"\n\nlistn = \"x\"\n", `bad.toml:3: unknown key "listn"`},
		{"# c\nheartbeat = \"often\"\n", `bad.toml:2: key "heartbeat": bad value "often"`},
		{"pair-burst = \"many\"\n", `bad.toml:1: key "pair-burst": bad value "many"`},
		{"reset-mailbox = true\n", `bad.toml:1: unknown key "reset-mailbox": it is taken on the command line only`},
		{"[web]\naddr = \"x\"\n", `bad.toml:1: key "web": tables are not used`},
		{"[server]\nlisten = \"x\"\n", `bad.toml:1: unknown key "server"`},
		{"listen = \n", `bad.toml:1:`},
		{"heartbeat = 1979-05-27\n", `a date is no setting`},
	} {
		cmd := daemonCmd(t, HubCommand(), "serve")
		p := write("bad.toml", tc.text)
		err := applySettings(cmd, "PZH", p, func(string) (string, bool) { return "", false })
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want a usage error with %q", tc.text, err, tc.want)
		}
	}

	p := write("good.toml", "listen = \"127.0.0.1:1\"\nheartbeat = \"2m\"\npair-burst = 9\nno-tcp = true\nlog-level = \"debug\"\ndata = \"/from/file\"\n")
	cmd := daemonCmd(t, HubCommand(), "serve")
	if err := cmd.ParseFlags([]string{"--heartbeat", "3m"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"PZH_LISTEN": "127.0.0.1:2", "PZH_DATA": "/from/env"}
	if err := applySettings(cmd, "PZH", p, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	f := cmd.Flags()
	for name, want := range map[string]string{"heartbeat": "3m0s", "listen": "127.0.0.1:2", "pair-burst": "9", "no-tcp": "true", "log-level": "debug", "data": ""} {
		if got := f.Lookup(name).Value.String(); got != want {
			t.Errorf("%s = %q, want %q (flag > environment > file)", name, got, want)
		}
	}
}
