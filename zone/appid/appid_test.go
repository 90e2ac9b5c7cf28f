package appid

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRegistry(t *testing.T) {
	dir := t.TempDir()
	r := Open(dir)
	cred, err := r.Add("notes", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cred, "pzapp.notes.") {
		t.Fatalf("credential %q", cred)
	}
	if app, err := r.Verify(cred); err != nil || app != "notes" {
		t.Fatalf("verify: %q, %v", app, err)
	}
	if _, err := r.Add("notes", time.Now()); !errors.Is(err, ErrExists) {
		t.Fatalf("second add: %v", err)
	}
	for _, bad := range []string{"pzp", "anonymous", "Bad", ""} {
		if _, err := r.Add(bad, time.Now()); err == nil {
			t.Errorf("add %q accepted", bad)
		}
	}
	// Another registry on the same directory (the CLI while pzp runs)
	// adds and removes; this one sees it at the next check.
	other := Open(dir)
	cred2, err := other.Add("v1.2", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if app, err := r.Verify(cred2); err != nil || app != "v1.2" {
		t.Fatalf("verify a name with dots: %q, %v", app, err)
	}
	if err := other.Remove("notes"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Verify(cred); !errors.Is(err, ErrBadCredential) {
		t.Fatalf("removed app still verifies: %v", err)
	}
	if err := other.Remove("notes"); !errors.Is(err, ErrNoApp) {
		t.Fatalf("remove twice: %v", err)
	}
	apps, err := r.List()
	if err != nil || len(apps) != 1 || apps[0].Name != "v1.2" {
		t.Fatalf("list: %+v, %v", apps, err)
	}
	// A credential with the right name and a wrong secret, or another
	// app's secret under this name, does not verify.
	if _, err := r.Verify("pzapp.v1.2." + strings.Split(cred, ".")[2]); !errors.Is(err, ErrBadCredential) {
		t.Fatalf("another secret: %v", err)
	}

	// The CLI's credential: only the one this daemon issued, this run.
	if _, err := r.Verify("pzapp.pzp.x"); !errors.Is(err, ErrBadCredential) {
		t.Fatal("CLI credential before any was issued")
	}
	if err := r.IssueCLI(); err != nil {
		t.Fatal(err)
	}
	if app, err := r.Verify(ReadCLI(dir)); err != nil || app != CLI {
		t.Fatalf("CLI: %q, %v", app, err)
	}
	old := ReadCLI(dir)
	r.IssueCLI()
	if _, err := r.Verify(old); err == nil {
		t.Fatal("an earlier run's CLI credential still works")
	}

	// A damaged file is an error that says what to do, never a panic.
	os.WriteFile(filepath.Join(dir, RegistryFile), []byte("{"), 0o600)
	if _, err := Open(dir).Verify(cred2); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged registry: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"pzapp.a.b", "pzapp..", "pzapp.a.", "pzapp.a.b.c", "x", ""} {
		f.Add(s)
	}
	r := Open(f.TempDir())
	f.Fuzz(func(t *testing.T, s string) {
		name, secret, ok := parse(s)
		if ok && (name == "" || secret == "" || strings.Contains(secret, ".")) {
			t.Fatalf("parse(%q) = %q, %q", s, name, secret)
		}
		if _, err := r.Verify(s); err == nil {
			t.Fatalf("%q verifies against an empty registry", s)
		}
	})
}
