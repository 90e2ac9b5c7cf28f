// Package pgtest starts a throwaway PostgreSQL server for tests: a new
// cluster (initdb) in a temporary directory, listening only on a Unix
// socket there, stopped and removed when the test ends. Run as root, it
// runs the server as the postgres (or nobody) user, which PostgreSQL
// requires. Without PostgreSQL's programs (Debian package postgresql) the
// test is skipped with a message that says so.
package pgtest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readyWait bounds the server's start: generous, for a loaded machine.
const readyWait = 2 * time.Minute

// Server is a running test server.
type Server struct {
	// URL connects to its postgres database as its superuser.
	URL string
	// Dir holds the cluster and the socket.
	Dir  string
	cmd  *exec.Cmd
	bin  string
	cred *syscall.Credential
	done chan struct{}
}

// Bin finds PostgreSQL's server programs, or returns "".
func Bin() string {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("postgres"); err == nil {
			return filepath.Dir(p)
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	return ""
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// Start starts a server for t, stopped when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := New()
	if errors.Is(err, ErrNotInstalled) {
		t.Skip(err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// ErrNotInstalled: PostgreSQL's programs are not on this machine.
var ErrNotInstalled = errors.New("PostgreSQL's server programs (initdb, postgres) are not installed: install Debian's postgresql package to run this test")

// New starts a server; Stop stops it.
func New() (*Server, error) {
	bin := Bin()
	if bin == "" {
		return nil, ErrNotInstalled
	}
	// A short path: the socket's must fit in 107 bytes.
	dir, err := os.MkdirTemp("", "pzpg")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, bin: bin, done: make(chan struct{})}
	if os.Geteuid() == 0 {
		cred, err := serverUser()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s.cred = cred
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := s.command("initdb", "-D", data, "-U", "pzone", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	if err := s.run(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.URL = fmt.Sprintf("host=%s port=5432 user=pzone dbname=postgres sslmode=disable", dir)
	return s, nil
}

// run starts the server on the cluster in s.Dir and waits until it
// takes connections.
func (s *Server) run() error {
	data := filepath.Join(s.Dir, "data")
	// Only the socket: nothing listens on any network address. fsync is
	// off for speed; what is tested is the protocol's use of commits.
	s.done = make(chan struct{})
	s.cmd = s.command("postgres", "-D", data, "-k", s.Dir, "-c", "listen_addresses=", "-c", "fsync=off",
		"-c", "max_connections=400", "-c", "shared_buffers=32MB")
	s.cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	ready := make(chan struct{})
	var logTail strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			if logTail.Len() < 8<<10 {
				logTail.WriteString(line + "\n")
			}
			if !signalled && strings.Contains(line, "ready to accept connections") {
				close(ready)
				signalled = true
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait(); close(s.done) }()
	select {
	case <-ready:
	case err := <-exited:
		return fmt.Errorf("postgres exited before it was ready: %v\n%s", err, logTail.String())
	case <-time.After(readyWait):
		s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("postgres was not ready after %v", readyWait)
	}
	return nil
}

// command runs one of PostgreSQL's programs, as the server's user.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd
}

// serverUser is the user a root test runs the server as.
func serverUser() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("running as root, and neither a postgres nor a nobody user exists to run the PostgreSQL server as (it refuses root)")
}

// Stop stops the server at once and removes its files.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	os.RemoveAll(s.Dir)
}

// Pause stops the server at once (an immediate shutdown: no checkpoint,
// clients cut, as a crash would) and returns a function that starts it
// again on the same files; for tests of a database that goes away.
func (s *Server) Pause(t testing.TB) (resume func()) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGQUIT)
	<-s.done
	return func() {
		t.Helper()
		if err := s.run(); err != nil {
			t.Fatal(err)
		}
	}
}
