package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// $OVERLAYD_FLANNELD picks the flanneld; one that cannot run is refused
// by name, with the variable.
func TestFlanneldFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "flanneld")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(FlanneldEnv, bin)
	if got, err := Flanneld(); err != nil || got != bin {
		t.Errorf("Flanneld() = %q, %v; want %s", got, err, bin)
	}
	notExec := filepath.Join(dir, "flanneld.txt")
	if err := os.WriteFile(notExec, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{notExec, dir, filepath.Join(dir, "missing")} {
		t.Setenv(FlanneldEnv, p)
		_, err := Flanneld()
		var envErr *EnvError
		if err == nil || !strings.Contains(err.Error(), FlanneldEnv+"="+p) || !errors.As(err, &envErr) {
			t.Errorf("%s=%s: %v, want an EnvError naming it", FlanneldEnv, p, err)
		}
	}
	// A relative path is from the module's root, where make test runs.
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(root, bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(FlanneldEnv, rel)
	if got, err := Flanneld(); err != nil || got != bin {
		t.Errorf("%s=%s: %q, %v; want %s", FlanneldEnv, rel, got, err, bin)
	}
}

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// The tests run in perf/cluster, two levels below the root.
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil || wd != filepath.Join(root, "perf", "cluster") {
		t.Errorf("module root %s of %s: %v", root, wd, err)
	}
}
