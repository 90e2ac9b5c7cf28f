// Package appid is who an application is on its device: the credentials
// that pzp app add issues, the registry of them in the data directory
// (apps.json, only their hashes), the daemon's own credential for its CLI,
// and the identity a request to pzp.sock carries once checked. An app's
// name comes from its credential, never from what it says about itself.
// See docs/PROTOCOL.md, "App credentials".
package appid

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pzone/pzone/zone/wire"
)

// Names with a meaning of their own, which no registered app may take.
const (
	// CLI is the identity of the device's own command line (pzp call,
	// pzp listen, ...): it proves itself with the credential the daemon
	// writes to CLIFile at start.
	CLI = "pzp"
	// Anonymous is every request that presents no credential (unless the
	// daemon refuses those: pzp run --require-app-auth). Rules can name it.
	Anonymous = "anonymous"
)

// Files in the data directory.
const (
	RegistryFile = "apps.json"
	CLIFile      = "cli.credential"
	lockFile     = "apps.lock"
)

// prefix starts every credential, so that one is recognisable in a
// config file or a leak scanner: pzapp.NAME.SECRET.
const prefix = "pzapp."

// ErrNoApp: no app of that name is registered.
var ErrNoApp = errors.New("no such app")

// ErrExists: the name is registered already.
var ErrExists = errors.New("app already registered")

// App is one registered application, as pzp app list shows it.
type App struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	// Hash is the SHA-256 of the credential's secret, hex. The secret is
	// 256 random bits, so a fast hash is enough: there is nothing to
	// guess.
	Hash string `json:"hash"`
}

type registryFile struct {
	Version int   `json:"version"`
	Apps    []App `json:"apps"`
}

const registryVersion = 1

// ValidateName checks a name for pzp app add: a service-style name that is
// not one of the reserved ones.
func ValidateName(name string) error {
	if err := wire.ValidateServiceName(name); err != nil {
		return err
	}
	if name == CLI || name == Anonymous {
		return fmt.Errorf("the app name %q is reserved (%s is the device's own CLI, %s any app without a credential)", name, CLI, Anonymous)
	}
	return nil
}

// newCredential makes a credential for name: the string to hand out and
// the hash to keep.
func newCredential(name string) (cred, hash string) {
	b := make([]byte, 32)
	rand.Read(b)
	secret := base64.RawURLEncoding.EncodeToString(b)
	return prefix + name + "." + secret, hashSecret(secret)
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// parse splits a credential into its name and secret.
func parse(cred string) (name, secret string, ok bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(cred), prefix)
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '.')
	if i <= 0 || i == len(rest)-1 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// Registry is the apps registered on a device, in its data directory. The
// CLI edits it while the daemon runs; the daemon reads it again whenever
// the file changed, so an app added or removed counts at its next request.
type Registry struct {
	dir string

	mu      sync.Mutex
	apps    map[string]App
	stamp   fileStamp
	cliHash string // the running daemon's CLI credential, if it issued one
}

type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

// Open returns the registry of the data directory dir. Nothing is read
// until it is used; a directory with no apps.json has no apps.
func Open(dir string) *Registry { return &Registry{dir: dir} }

func (r *Registry) path() string { return filepath.Join(r.dir, RegistryFile) }

// load reads the file if it changed since last read; r.mu is held.
func (r *Registry) load() error {
	fi, err := os.Stat(r.path())
	if errors.Is(err, os.ErrNotExist) {
		r.apps, r.stamp = map[string]App{}, fileStamp{}
		return nil
	}
	if err != nil {
		return err
	}
	st := fileStamp{mod: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	if r.apps != nil && st == r.stamp {
		return nil
	}
	apps, err := readRegistry(r.path())
	if err != nil {
		return err
	}
	r.apps, r.stamp = apps, st
	return nil
}

func readRegistry(path string) (map[string]App, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]App{}, nil
	}
	if err != nil {
		return nil, err
	}
	var f registryFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s is damaged (%v): remove it and register the apps again with pzp app add", path, err)
	}
	if f.Version != registryVersion {
		return nil, fmt.Errorf("%s has format version %d; this pzp reads %d: use the pzp that wrote it", path, f.Version, registryVersion)
	}
	apps := make(map[string]App, len(f.Apps))
	for _, a := range f.Apps {
		if wire.ValidateServiceName(a.Name) != nil || len(a.Hash) != 64 {
			return nil, fmt.Errorf("%s is damaged (a bad entry %q): remove it and register the apps again with pzp app add", path, a.Name)
		}
		apps[a.Name] = a
	}
	return apps, nil
}

// edit runs change on the registry's apps under the directory's lock and
// writes the result in place atomically: another pzp app add at the same
// moment waits, and a crash leaves the old file or the new one.
func (r *Registry) edit(change func(apps map[string]App) error) error {
	lock, err := os.OpenFile(filepath.Join(r.dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	apps, err := readRegistry(r.path())
	if err != nil {
		return err
	}
	if err := change(apps); err != nil {
		return err
	}
	f := registryFile{Version: registryVersion, Apps: make([]App, 0, len(apps))}
	for _, a := range apps {
		f.Apps = append(f.Apps, a)
	}
	sort.Slice(f.Apps, func(i, j int) bool { return f.Apps[i].Name < f.Apps[j].Name })
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFile(r.path(), append(data, '\n'), true); err != nil {
		return fmt.Errorf("save %s: %w (it is unchanged: free some space or fix its directory, and try again)", r.path(), err)
	}
	return nil
}

// writeFile replaces path with data (mode 0600) atomically, and durably
// if durable: the registry must survive a crash; the CLI's credential is
// made again at every start, so it needs no fsync at start-up.
func writeFile(path string, data []byte, durable bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if durable {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if !durable {
		return nil
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Add registers name and returns its credential, which is not kept: the
// caller shows it once.
func (r *Registry) Add(name string, now time.Time) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	cred, hash := newCredential(name)
	err := r.edit(func(apps map[string]App) error {
		if _, ok := apps[name]; ok {
			return fmt.Errorf("%w: %q (pzp app rm %s first to issue a new credential)", ErrExists, name, name)
		}
		apps[name] = App{Name: name, Created: now.UTC().Truncate(time.Second), Hash: hash}
		return nil
	})
	if err != nil {
		return "", err
	}
	return cred, nil
}

// Remove unregisters name: its credential stops working at the next
// request that presents it.
func (r *Registry) Remove(name string) error {
	return r.edit(func(apps map[string]App) error {
		if _, ok := apps[name]; !ok {
			return fmt.Errorf("%w: %q (pzp app list shows the registered apps)", ErrNoApp, name)
		}
		delete(apps, name)
		return nil
	})
}

// List returns the registered apps by name.
func (r *Registry) List() ([]App, error) {
	apps, err := readRegistry(r.path())
	if err != nil {
		return nil, err
	}
	out := make([]App, 0, len(apps))
	for _, a := range apps {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// IssueCLI makes a fresh credential for the device's CLI and writes it to
// CLIFile (0600), for a daemon starting: the last one stops working. Only
// this user can read it, as only this user can reach pzp.sock, read the
// device's key, or run its CLI.
func (r *Registry) IssueCLI() error {
	cred, hash := newCredential(CLI)
	if err := writeFile(filepath.Join(r.dir, CLIFile), []byte(cred+"\n"), false); err != nil {
		return fmt.Errorf("write the CLI's credential: %w", err)
	}
	r.mu.Lock()
	r.cliHash = hash
	r.mu.Unlock()
	return nil
}

// RemoveCLI removes the CLI credential file, for a daemon stopping.
func (r *Registry) RemoveCLI() { os.Remove(filepath.Join(r.dir, CLIFile)) }

// CLIPath is where the daemon in dir writes its CLI's credential.
func CLIPath(dir string) string { return filepath.Join(dir, CLIFile) }

// ReadCLI returns the credential a running daemon in dir issued its CLI,
// or "" when there is none (no daemon, or one too old to issue it).
func ReadCLI(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, CLIFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// ErrBadCredential: a credential was presented and is not (or no longer)
// valid.
var ErrBadCredential = errors.New("app credential not valid")

// Verify returns the app a credential belongs to.
func (r *Registry) Verify(cred string) (string, error) {
	name, secret, ok := parse(cred)
	if !ok {
		return "", fmt.Errorf("%w: it is not a pzone app credential (pzapp.NAME.SECRET, as pzp app add prints it)", ErrBadCredential)
	}
	got := hashSecret(secret)
	r.mu.Lock()
	defer r.mu.Unlock()
	if name == CLI {
		if r.cliHash != "" && subtle.ConstantTimeCompare([]byte(got), []byte(r.cliHash)) == 1 {
			return CLI, nil
		}
		return "", fmt.Errorf("%w: the CLI credential is from an earlier run of pzp (read %s again)", ErrBadCredential, CLIFile)
	}
	if err := r.load(); err != nil {
		return "", err
	}
	a, ok := r.apps[name]
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.Hash)) != 1 {
		return "", fmt.Errorf("%w: app %q is not registered with this credential on this device (pzp app list; pzp app add %s issues one)", ErrBadCredential, name, name)
	}
	return name, nil
}

type ctxKey struct{}

// WithApp returns ctx carrying the checked identity app.
func WithApp(ctx context.Context, app string) context.Context {
	return context.WithValue(ctx, ctxKey{}, app)
}

// From returns the identity in ctx; Anonymous when none was set.
func From(ctx context.Context) string {
	if a, ok := ctx.Value(ctxKey{}).(string); ok {
		return a
	}
	return Anonymous
}

type recheckKey struct{}

// WithRecheck returns ctx carrying check, which says whether the identity
// in ctx still holds (its credential not removed, the CLI's not replaced):
// a connection that lives on after its request was checked, an app's
// channel, asks again before each thing it does.
func WithRecheck(ctx context.Context, check func() error) context.Context {
	return context.WithValue(ctx, recheckKey{}, check)
}

// Recheck says why the identity in ctx no longer holds, or nil.
func Recheck(ctx context.Context) error {
	if f, ok := ctx.Value(recheckKey{}).(func() error); ok {
		return f()
	}
	return nil
}
