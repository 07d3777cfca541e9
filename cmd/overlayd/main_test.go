package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// help runs overlayd with args, capturing what it prints.
func help(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	helpOut = &out
	defer func() { helpOut = os.Stdout }()
	code = dispatch(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestHelp: every way of asking for help succeeds and lists every
// command, --help with the run flags; each command has its own.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"-help"}} {
		code, out, errOut := help(t, args...)
		if code != 0 {
			t.Errorf("%q: exit %d, want 0; stderr %s", args, code, errOut)
		}
		for _, c := range commands {
			if !strings.Contains(out, "\n  "+c.name+" ") {
				t.Errorf("%q: command %s not listed:\n%s", args, c.name, out)
			}
		}
		// overlayd --help shows the daemon's flags, as flanneld --help
		// does; overlayd help, the commands only.
		for _, want := range []string{"\n  --etcd-endpoints string", "\n  --tun-name", "\n  --iface"} {
			if shown := strings.Contains(out, want); shown != (args[0] != "help") {
				t.Errorf("%q: run flag %q shown %v:\n%s", args, want, shown, out)
			}
		}
	}
	for _, c := range commands {
		for _, args := range [][]string{{"help", c.name}, {c.name, "--help"}, {c.name, "-h"}} {
			code, out, errOut := help(t, args...)
			if code != 0 || !strings.HasPrefix(out, "usage: overlayd "+c.name) {
				t.Errorf("%q: exit %d, output:\n%s\nstderr: %s", args, code, out, errOut)
			}
		}
	}
	if code, _, errOut := help(t, "nosuch"); code != 2 || !strings.Contains(errOut, `unknown command "nosuch"`) {
		t.Errorf("unknown command: exit %d, stderr %s", code, errOut)
	}
	if code, _, errOut := help(t, "stauts"); code != 2 || !strings.Contains(errOut, `unknown command "stauts"; did you mean status?`) {
		t.Errorf("misspelt command: exit %d, stderr %s", code, errOut)
	}
	if code, _, errOut := help(t, "help", "nosuch"); code != 2 || !strings.Contains(errOut, `unknown command "nosuch"`) {
		t.Errorf("help of an unknown command: exit %d, stderr %s", code, errOut)
	}
}

// TestRunFlagsHelpText: each default said once, no flag name garbled by
// backquotes, /metrics where it is served.
func TestRunFlagsHelpText(t *testing.T) {
	_, out, _ := help(t, "run", "--help")
	flags := map[string]string{}
	var name string
	for _, line := range strings.Split(out, "\n") {
		if f, ok := strings.CutPrefix(line, "  --"); ok {
			name, _, _ = strings.Cut(f, " ")
			flags[name] = line
		} else if name != "" {
			flags[name] += line
		}
	}
	if strings.Count(flags["queues"], "default") != 1 {
		t.Errorf("-queues says its default other than once: %q", flags["queues"])
	}
	if !strings.HasPrefix(flags["control-socket"], "  --control-socket string") {
		t.Errorf("-control-socket garbled: %q", flags["control-socket"])
	}
	if !strings.Contains(flags["healthz-ip"], "/metrics") || !strings.Contains(flags["healthz-port"], "/metrics") {
		t.Errorf("-healthz-ip/-healthz-port do not say they serve /metrics: %q %q", flags["healthz-ip"], flags["healthz-port"])
	}
	if _, ok := flags["partial-checksums"]; ok {
		t.Error("hidden flag -partial-checksums shown")
	}
}

// TestExplainEnv: a flag set by the environment is named with its
// variable, so that the operator finds where the value came from.
func TestExplainEnv(t *testing.T) {
	t.Setenv("OVERLAYD_IFACE", "lo")
	t.Setenv("FLANNELD_IFACE", "eth9")
	defer func() { fromEnv = map[string]string{} }()
	fs := newFlagSet("run")
	fs.String("iface", "", "")
	fs.String("iface-regex", "", "")
	if err := parseFlags(fs, nil); err != nil {
		t.Fatal(err)
	}
	err := explainEnv(errors.New(`--iface "lo": interface lo has only 127.0.0.1 (loopback)`))
	if want := `(--iface was set by the environment: OVERLAYD_IFACE="lo")`; !strings.Contains(err.Error(), want) {
		t.Errorf("%v\nlacks %s", err, want)
	}
	if err := explainEnv(errors.New(`--iface-regex "x": bad`)); strings.Contains(err.Error(), "environment") {
		t.Errorf("a longer flag name taken for --iface: %v", err)
	}
	// Given on the command line too: the command line's.
	fromEnv = map[string]string{}
	fs = newFlagSet("run")
	fs.String("iface", "", "")
	if err := parseFlags(fs, []string{"--iface", "eth1"}); err != nil {
		t.Fatal(err)
	}
	if err := explainEnv(fmt.Errorf(`--iface "eth1": no such interface`)); strings.Contains(err.Error(), "environment") {
		t.Errorf("command-line value blamed on the environment: %v", err)
	}
}

// TestCommandLineMistakes: a command line that cannot be what the user
// meant is refused with one line that says why (exit 2), and starts
// nothing: a command after flags, a stray argument, a misspelt flag, a
// malformed etcd URL.
func TestCommandLineMistakes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tun-name", "flannel0", "status"}, `unexpected argument "status": a command goes first, before its flags (overlayd status [flags])`},
		{[]string{"run", "extra-arg"}, `unexpected argument "extra-arg": overlayd run takes flags only`},
		{[]string{"status", "extra"}, `unexpected argument "extra"`},
		{[]string{"version", "extra"}, `unexpected argument "extra"`},
		{[]string{"leases", "extra"}, `unexpected argument "extra"`},
		{[]string{"docker-opts", "extra"}, `unexpected argument "extra"`},
		{[]string{"docker-opts", "-f", "/run/a.env", "--subnet-file", "/run/b.env"}, "-f /run/a.env and --subnet-file /run/b.env name two subnet files: give one"},
		{[]string{"--etcd-endpoint", "http://198.18.0.254:2379"}, "unknown flag --etcd-endpoint; did you mean --etcd-endpoints? (overlayd run --help lists the flags)"},
		{[]string{"status", "--bogus"}, "unknown flag --bogus (overlayd status --help lists the flags)"},
		// A refused value: what the flag takes, not "parse error".
		{[]string{"run", "--busy-poll=50"}, `--busy-poll "50": want a duration with its unit, like 50us, 10s or 24h (overlayd run --help lists the flags)`},
		{[]string{"run", "--queues", "many"}, `--queues "many": want a whole number`},
		{[]string{"run", "--ip-masq=maybe"}, `--ip-masq "maybe": want true or false`},
		{[]string{"run", "--queues", "99999999999999999999"}, `--queues "99999999999999999999": value out of range (want a whole number)`},
		{[]string{"run", "--iface"}, `--iface needs a value (overlayd run --help lists the flags)`},
		{[]string{"config", "--etcd-endpoints", "http://198.18.0.254:2379", "put"}, "get or put goes first"},
		{[]string{"config", "put"}, "config put takes one argument besides its flags"},
		{[]string{"config", "put", "{}", "{}"}, "config put takes one argument besides its flags"},
	} {
		code, out, errOut := help(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 1 || out != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and one line with %q", tc.args, code, out, errOut, tc.want)
		}
	}
	// Exit 1: the command line is understood, the value is wrong; the
	// URL is refused before any dial.
	for _, args := range [][]string{
		{"leases", "--etcd-endpoints", "htp://198.18.0.254:2379"},
		{"config", "get", "--etcd-endpoints", "http://198.18.0.254"},
	} {
		code, _, errOut := help(t, args...)
		if code != 1 || !strings.Contains(errOut, "--etcd-endpoints: ") || !strings.Contains(errOut, "like http://127.0.0.1:2379") {
			t.Errorf("%q: exit %d, stderr:\n%s\nwant exit 1 naming --etcd-endpoints", args, code, errOut)
		}
	}
}

// TestFlagsAfterArguments: flags may follow config put's JSON, and "--"
// ends the flags.
func TestFlagsAfterArguments(t *testing.T) {
	fs := newFlagSet("config put")
	var ef etcdFlags
	ef.register(fs)
	takesArgs[fs] = true
	if err := parseFlags(fs, []string{"{}", "--etcd-prefix", "/x", "--", "--etcd-prefix"}); err != nil {
		t.Fatal(err)
	}
	if ef.prefix != "/x" || !slices.Equal(fs.Args(), []string{"{}", "--etcd-prefix"}) {
		t.Errorf("prefix %q, arguments %q; want /x and [{} --etcd-prefix]", ef.prefix, fs.Args())
	}
}

// TestDockerOptsSubnetFile: mk-docker-opts.sh's -f and overlayd's
// --subnet-file name the same file; either reads it, and both may be
// given if they agree (two files are refused in TestCommandLineMistakes).
func TestDockerOptsSubnetFile(t *testing.T) {
	dir := t.TempDir()
	env := filepath.Join(dir, "subnet.env")
	data := "FLANNEL_NETWORK=100.96.0.0/16\nFLANNEL_SUBNET=100.96.7.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n"
	if err := os.WriteFile(env, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, given := range [][]string{{"-f", env}, {"--subnet-file", env}, {"-f", env, "--subnet-file", env}} {
		out := filepath.Join(dir, "docker_opts.env")
		args := append([]string{"docker-opts", "-d", out}, given...)
		if code, _, errOut := help(t, args...); code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, errOut)
		}
		opts, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(opts), "--bip=100.96.7.1/24") {
			t.Errorf("%q wrote:\n%s\nwant the --bip of %s", args, opts, env)
		}
	}
}

// TestDockerOptsCheckDaemonJSON: flags that daemon.json sets too would
// stop dockerd, so they are refused, naming the keys and the way out; a
// daemon.json without them, or none, is no obstacle.
func TestDockerOptsCheckDaemonJSON(t *testing.T) {
	dir := t.TempDir()
	env := filepath.Join(dir, "subnet.env")
	if err := os.WriteFile(env, []byte("FLANNEL_NETWORK=100.96.0.0/16\nFLANNEL_SUBNET=100.96.7.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, json string
		extra      []string
		refused    string // the keys named, or "" for written
	}{
		{"bip and mtu set", `{"log-level": "warn", "bip": "172.18.0.1/16", "mtu": 1400}`, nil, "bip, mtu"},
		{"ip-masq set", `{"ip-masq": true}`, nil, "ip-masq"},
		{"ip-masq set, -m", `{"ip-masq": true}`, []string{"-m"}, ""},
		{"other keys", `{"log-level": "warn", "bridge": ""}`, nil, ""},
		{"empty", ``, nil, ""},
		{"absent", "-", nil, ""},
		{"not JSON: only a warning", `{"bip": `, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			daemonJSON := filepath.Join(t.TempDir(), "daemon.json")
			if tc.json != "-" {
				if err := os.WriteFile(daemonJSON, []byte(tc.json), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out := filepath.Join(t.TempDir(), "docker")
			args := append([]string{"docker-opts", "-f", env, "-d", out, "--check-daemon-json", daemonJSON}, tc.extra...)
			code, _, errOut := help(t, args...)
			_, statErr := os.Stat(out)
			if tc.refused == "" {
				if code != 0 || statErr != nil {
					t.Fatalf("exit %d, %v: %s; want the file written", code, statErr, errOut)
				}
				return
			}
			if code == 0 || statErr == nil {
				t.Fatalf("exit %d, file written: %v; want refused", code, statErr)
			}
			for _, want := range []string{daemonJSON + " sets " + tc.refused, "--daemon-json " + daemonJSON} {
				if !strings.Contains(errOut, want) {
					t.Errorf("error %q lacks %q", errOut, want)
				}
			}
		})
	}
}
