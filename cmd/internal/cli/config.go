package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Config files and environment variables for the daemons (pzh serve,
// pzp run). A config file is flat TOML: one key per flag, named as the
// flag without its dashes ("listen", "web-session-idle", "data"), with
// the value TOML gives it (a string, a number, true/false, or an array
// for a flag that may be repeated). A flag's environment variable is
// PZH_ or PZP_ and the flag's name in capitals with '_' for '-'
// (PZH_WEB_SESSION_IDLE). The command line beats the environment, which
// beats the file, which beats the defaults.

// notInConfig are flags that act once, on purpose, and would do harm
// repeated at every start; they are taken on the command line only.
var notInConfig = map[string]bool{
	"config": true, "help": true, "version": true,
	"reset-zone-state": true, "reset-mailbox": true,
}

// addConfigFlag gives a daemon command --config and makes it read the
// file and the environment (prefix PZH or PZP) before it runs.
func addConfigFlag(cmd *cobra.Command, prefix string) {
	var file string
	cmd.Flags().StringVar(&file, "config", "", fmt.Sprintf("read settings from this TOML file (keys: the flags' names; '%s config example' prints one); flags and %s_* variables override it", strings.ToLower(prefix), prefix))
	prev := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if err := applySettings(cmd, prefix, file, os.LookupEnv); err != nil {
			return err
		}
		if prev != nil {
			return prev(cmd, args)
		}
		return nil
	}
}

// configFlags are the flags of cmd a file or the environment may set,
// by name: its own and those it inherits (--data, --log-level).
func configFlags(cmd *cobra.Command) map[string]*pflag.Flag {
	out := map[string]*pflag.Flag{}
	add := func(f *pflag.Flag) {
		if !notInConfig[f.Name] && !f.Hidden {
			out[f.Name] = f
		}
	}
	cmd.InheritedFlags().VisitAll(add)
	cmd.LocalFlags().VisitAll(add)
	return out
}

// envName is the environment variable of flag name.
func envName(prefix, name string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// applySettings sets every flag not given on the command line from the
// environment, else from file (if any).
func applySettings(cmd *cobra.Command, prefix, file string, env func(string) (string, bool)) error {
	flags := configFlags(cmd)
	set := map[string]bool{}
	for name, f := range flags {
		if f.Changed {
			set[name] = true
			continue
		}
		v, ok := env(envName(prefix, name))
		if name == "data" {
			// PZH_DATA/PZP_DATA is read where the data directory is
			// resolved; the file must not beat it.
			set[name] = ok
			continue
		}
		if !ok {
			continue
		}
		if err := f.Value.Set(v); err != nil {
			return usagef("$%s: %v", envName(prefix, name), err)
		}
		set[name] = true
	}
	if file == "" {
		return nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	return applyFile(file, b, flags, set)
}

// applyFile sets the flags the file names that nothing else set.
func applyFile(file string, b []byte, flags map[string]*pflag.Flag, set map[string]bool) error {
	var doc map[string]any
	if err := toml.Unmarshal(b, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return usagef("%s:%d:%d: %v", file, row, col, de)
		}
		return usagef("%s: %v", file, err)
	}
	keys := make([]string, 0, len(doc))
	lines := map[string]int{}
	for k := range doc {
		keys = append(keys, k)
		lines[k] = keyLine(b, k)
	}
	sort.Slice(keys, func(i, j int) bool { return lines[keys[i]] < lines[keys[j]] })
	for _, k := range keys {
		at := fmt.Sprintf("%s:%d", file, lines[k])
		f, ok := flags[k]
		if !ok {
			why := "it is no setting of this command"
			if notInConfig[k] {
				why = "it is taken on the command line only"
			}
			return usagef("%s: unknown key %q: %s (see the command's --help for the settings)", at, k, why)
		}
		if set[k] {
			continue
		}
		vals, err := configValues(doc[k])
		if err != nil {
			return usagef("%s: key %q: %v", at, k, err)
		}
		for _, v := range vals {
			if err := f.Value.Set(v); err != nil {
				return usagef("%s: key %q: bad value %q: %v", at, k, v, err)
			}
		}
		f.Changed = true
	}
	return nil
}

// configValues turns a TOML value into what the flag takes, one string
// per Set.
func configValues(v any) ([]string, error) {
	switch x := v.(type) {
	case string:
		return []string{x}, nil
	case bool:
		return []string{strconv.FormatBool(x)}, nil
	case int64:
		return []string{strconv.FormatInt(x, 10)}, nil
	case float64:
		return []string{strconv.FormatFloat(x, 'g', -1, 64)}, nil
	case []any:
		var out []string
		for _, e := range x {
			s, err := configValues(e)
			if err != nil || len(s) != 1 {
				return nil, errors.New("an array may hold strings, numbers or booleans only")
			}
			out = append(out, s[0])
		}
		return out, nil
	case map[string]any:
		return nil, errors.New("tables are not used: write every key at the top level")
	case time.Time, toml.LocalDate, toml.LocalDateTime, toml.LocalTime:
		return nil, errors.New("a date is no setting; durations are strings such as \"30m\"")
	}
	return nil, fmt.Errorf("a %T is no setting", v)
}

// keyLine finds the line (from 1) where key is set in a flat TOML file,
// bare or quoted; 0 if it cannot tell.
func keyLine(b []byte, key string) int {
	k := regexp.QuoteMeta(key)
	re := regexp.MustCompile(`^\s*(("` + k + `"|'` + k + `'|` + k + `)\s*=|\[\[?\s*("` + k + `"|'` + k + `'|` + k + `)\s*[.\]])`)
	for i, line := range strings.Split(string(b), "\n") {
		if re.MatchString(line) {
			return i + 1
		}
	}
	return 0
}

// writeExample prints a config file for daemon, every setting commented
// out at its default, with its help.
func writeExample(w io.Writer, daemon *cobra.Command, prefix string) error {
	flags := configFlags(daemon)
	names := make([]string, 0, len(flags))
	for n := range flags {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "# Settings of '%s', for --config FILE. Every key is a flag of that\n", daemon.CommandPath())
	fmt.Fprintf(w, "# command; a flag on the command line, or its %s_* variable, beats\n# the file. Uncomment what you change.\n", prefix)
	for _, n := range names {
		f := flags[n]
		fmt.Fprintf(w, "\n# %s (%s)\n", f.Usage, envName(prefix, n))
		fmt.Fprintf(w, "# %s = %s\n", n, exampleValue(f))
	}
	return nil
}

// exampleValue is a flag's default in TOML.
func exampleValue(f *pflag.Flag) string {
	switch f.Value.Type() {
	case "bool", "int", "int64", "uint", "uint32", "float64":
		return f.DefValue
	case "stringSlice", "stringArray":
		d := strings.Trim(f.DefValue, "[]")
		if d == "" {
			return "[]"
		}
		parts := strings.Split(d, ",")
		for i, p := range parts {
			parts[i] = strconv.Quote(p)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return strconv.Quote(f.DefValue)
}

// newConfigCmd is 'pzh config' / 'pzp config': example.
func newConfigCmd(daemon func() *cobra.Command, prefix string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print an example config file for the daemon, with every setting at its default",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "example",
		Short: "Print a commented config file with the defaults",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return writeExample(cmd.OutOrStdout(), daemon(), prefix)
		},
	})
	return cmd
}
