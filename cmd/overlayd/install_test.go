package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `make install` lays out what a host needs (binary, unit, docker drop-in,
// defaults file), with paths filled in, a version from git, and units that
// systemd-analyze accepts.
func TestMakeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds overlayd through make")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make on this host")
	}
	root, bin := t.TempDir(), t.TempDir()
	install := func() {
		t.Helper()
		cmd := exec.Command("make", "-s", "-C", "../..", "install", "DESTDIR="+root, "BIN="+bin, "DOCKERD=/usr/bin/dockerd")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
	}
	install()

	files := map[string]os.FileMode{
		"usr/local/bin/overlayd":                            0o755,
		"usr/local/lib/systemd/system/overlayd.service":     0o644,
		"etc/systemd/system/docker.service.d/overlayd.conf": 0o644,
		"etc/default/overlayd":                              0o644,
	}
	for name, mode := range files {
		fi, err := os.Stat(filepath.Join(root, name))
		if err != nil {
			t.Errorf("not installed: %v", err)
		} else if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	read := func(name string) string {
		data, _ := os.ReadFile(filepath.Join(root, name))
		return string(data)
	}
	unit := read("usr/local/lib/systemd/system/overlayd.service")
	dropIn := read("etc/systemd/system/docker.service.d/overlayd.conf")
	for _, want := range []string{"Type=notify\n", "ExecStart=/usr/local/bin/overlayd run\n", "Restart=on-failure\n", "EnvironmentFile=-/etc/default/overlayd\n"} {
		if !strings.Contains(unit, want) {
			t.Errorf("overlayd.service lacks %q", want)
		}
	}
	for _, want := range []string{"After=overlayd.service\n", "ExecStartPre=/usr/local/bin/overlayd docker-opts -c -k DOCKER_NETWORK_OPTIONS -d /run/flannel/docker --check-daemon-json /etc/docker/daemon.json\n",
		"EnvironmentFile=-/run/flannel/docker\n", "ExecStart=\n", "ExecStart=/usr/bin/dockerd -H fd:// "} {
		if !strings.Contains(dropIn, want) {
			t.Errorf("docker drop-in lacks %q", want)
		}
	}
	if strings.Contains(unit+dropIn, "@") {
		t.Errorf("a placeholder is left:\n%s\n%s", unit, dropIn)
	}

	// The version is git's, when git knows the tree.
	out, err := exec.Command(filepath.Join(root, "usr/local/bin/overlayd"), "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if desc, err := exec.Command("git", "describe", "--tags", "--always").Output(); err == nil {
		if want := "overlayd " + strings.TrimSpace(string(desc)); !strings.HasPrefix(string(out), want) {
			t.Errorf("version %q, want %q", out, want)
		}
	}

	// A second install keeps the operator's settings.
	settings := "OVERLAYD_IFACE=eth1\n"
	os.WriteFile(filepath.Join(root, "etc/default/overlayd"), []byte(settings), 0o644)
	install()
	if got := read("etc/default/overlayd"); got != settings {
		t.Errorf("reinstall replaced /etc/default/overlayd: %q", got)
	}

	t.Run("SystemdAnalyzeVerify", func(t *testing.T) {
		sa, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("no systemd-analyze on this host")
		}
		// Stubs of what the units refer to, so that verify checks ours and
		// not this host: the targets every service depends on, a
		// docker.service for the drop-in, and its dockerd.
		units := filepath.Join(root, "lib/systemd/system")
		os.MkdirAll(units, 0o755)
		for _, u := range []string{"sysinit", "basic", "shutdown", "network-online", "multi-user", "sockets", "paths", "timers", "slices"} {
			os.WriteFile(filepath.Join(units, u+".target"), []byte("[Unit]\nDescription="+u+"\n"), 0o644)
		}
		os.WriteFile(filepath.Join(units, "docker.service"), []byte("[Service]\nType=notify\nExecStart=/usr/bin/dockerd -H fd://\n"), 0o644)
		os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
		os.WriteFile(filepath.Join(root, "usr/bin/dockerd"), []byte("#!/bin/sh\n"), 0o755)

		cmd := exec.Command(sa, "--root="+root, "verify", "overlayd.service", "docker.service")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil || out.Len() > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out.String())
		}
	})
}
