package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/overlayd/overlayd/subnet"
	"github.com/overlayd/overlayd/subnet/dockeropts"
)

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// runDockerOpts is flannel's mk-docker-opts.sh, with its flags, plus a
// merge into daemon.json.
func runDockerOpts(_ context.Context, args []string) error {
	fs := newFlagSet("docker-opts")
	var (
		subnetFile, shortFile, out, key string
		daemonJSON, checkJSON           string
		individual, combined, noMasq    bool
		units                           stringList
	)
	fs.StringVar(&subnetFile, "subnet-file", subnet.DefaultSubnetFile, "subnet file to read (overlayd run's --subnet-file)")
	fs.StringVar(&shortFile, "f", subnet.DefaultSubnetFile, "same as --subnet-file (mk-docker-opts.sh's name)")
	fs.StringVar(&out, "d", "/run/docker_opts.env", "environment file to write (\"-\": standard output)")
	fs.StringVar(&key, "k", "DOCKER_OPTS", "name of the variable holding all options (-c)")
	fs.BoolVar(&individual, "i", false, "write one DOCKER_OPT_* variable per option (default with neither -i nor -c: both)")
	fs.BoolVar(&combined, "c", false, "write all options in one variable, named by -k")
	fs.BoolVar(&noMasq, "m", false, "leave --ip-masq out")
	fs.StringVar(&daemonJSON, "daemon-json", "",
		"merge bip, mtu and ip-masq into this daemon.json (e.g. /etc/docker/daemon.json) instead; other keys are kept. "+
			"The -d file is then written only if -d is given, with its variables empty")
	fs.StringVar(&checkJSON, "check-daemon-json", "",
		"refuse to write the flags when this daemon.json (e.g. /etc/docker/daemon.json) sets one of them too, "+
			"which would stop dockerd; a missing file sets none, one that cannot be read or parsed gets a warning")
	fs.Var(&units, "dockerd-dropin", "docker.service or a drop-in of it (repeatable, in systemd's order): "+
		"--daemon-json refuses to set an option its dockerd ExecStart gives as a flag")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if !individual && !combined {
		individual, combined = true, true
	}
	if combined && !dockeropts.ValidKey(key) {
		return fmt.Errorf("-k %q: not a variable name", key)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	outGiven := given["d"]
	switch {
	case given["f"] && given["subnet-file"] && shortFile != subnetFile:
		return usagef("-f %s and --subnet-file %s name two subnet files: give one", shortFile, subnetFile)
	case given["f"]:
		subnetFile = shortFile
	}
	if len(units) > 0 && daemonJSON == "" {
		return errors.New("--dockerd-dropin checks a --daemon-json merge; give --daemon-json too")
	}

	env, err := subnet.ReadSubnetEnv(subnetFile)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no subnet file at %s: is overlayd running and ready? (its --subnet-file; here -f/--subnet-file)", subnetFile)
	}
	if err != nil {
		return err
	}
	opts := dockeropts.FromSubnetEnv(env, noMasq)

	toEnv := &opts
	if daemonJSON != "" {
		changed, err := dockeropts.MergeDaemonJSONFile(daemonJSON, opts, units)
		if err != nil {
			return err
		}
		state := "already held"
		if changed {
			state = "merged into"
		}
		fmt.Fprintf(os.Stderr, "overlayd docker-opts: %s %s %s\n", strings.Join(opts.Flags(), " "), state, daemonJSON)
		if !outGiven {
			return nil
		}
		toEnv = nil // dockerd reads them from daemon.json; giving them as flags too would stop it
	}
	if toEnv != nil && checkJSON != "" {
		if err := checkDaemonJSON(checkJSON, opts, out); err != nil {
			return err
		}
	}
	data := dockeropts.Env(toEnv, individual, combined, key)
	if out == "-" {
		_, err := os.Stdout.Write(data)
		return err
	}
	if err := dockeropts.WriteFile(out, data, 0o644); err != nil {
		return fmt.Errorf("-d %s: %w", out, err)
	}
	return nil
}

// checkDaemonJSON fails when the daemon.json at path sets an option that
// the flags written to out set too: dockerd refuses a directive given both
// ways, and would not start. A file it cannot read or parse only gets a
// warning: dockerd is the judge of its own configuration, and the check
// must not be what keeps it from starting.
func checkDaemonJSON(path string, opts dockeropts.Options, out string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		var keys []string
		if keys, err = dockeropts.InDaemonJSON(data, opts); err == nil && len(keys) > 0 {
			return fmt.Errorf("%s sets %s, which the flags written to %s set too, and dockerd refuses a directive given both ways: "+
				"remove %s from %s, or have overlayd merge the options into it (docker-opts --daemon-json %s, as the drop-in's comment shows)",
				path, strings.Join(keys, ", "), out, strings.Join(keys, ", "), path, path)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "overlayd docker-opts: warning: --check-daemon-json %s not checked: %v\n", path, err)
	}
	return nil
}
