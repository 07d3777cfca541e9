package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/overlayd/overlayd/subnet"
	"github.com/overlayd/overlayd/subnet/etcd"
)

// etcdFlags are the registry connection flags shared by every command that
// talks to etcd, named as flanneld names them.
type etcdFlags struct {
	endpoints, prefix         string
	caFile, certFile, keyFile string
	username, password        string
}

func (f *etcdFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.endpoints, "etcd-endpoints", "http://127.0.0.1:4001,http://127.0.0.1:2379", "comma-separated etcd client URLs")
	fs.StringVar(&f.prefix, "etcd-prefix", "/coreos.com/network", "etcd key prefix of the network config and the subnet leases")
	fs.StringVar(&f.caFile, "etcd-cafile", "", "CA certificate file for etcd TLS")
	fs.StringVar(&f.certFile, "etcd-certfile", "", "client certificate file for etcd TLS")
	fs.StringVar(&f.keyFile, "etcd-keyfile", "", "client key file for etcd TLS")
	fs.StringVar(&f.username, "etcd-username", "", "etcd user name")
	fs.StringVar(&f.password, "etcd-password", "", "etcd password")
}

func (f *etcdFlags) list() []string {
	var out []string
	for _, e := range strings.Split(f.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// validate checks what etcd.New would default silently, naming the flag.
func (f *etcdFlags) validate() error {
	var errs []error
	if len(f.list()) == 0 {
		errs = append(errs, errors.New("--etcd-endpoints: empty; give the etcd client URLs, e.g. http://127.0.0.1:2379"))
	}
	for _, e := range f.list() {
		if err := etcd.CheckURL(e); err != nil {
			errs = append(errs, fmt.Errorf("--etcd-endpoints: %w", err))
		}
	}
	if !strings.HasPrefix(f.prefix, "/") {
		errs = append(errs, fmt.Errorf("--etcd-prefix %q: must be an absolute key path such as /coreos.com/network", f.prefix))
	}
	return errors.Join(errs...)
}

func (f *etcdFlags) options() etcd.Options {
	return etcd.Options{
		Endpoints: f.list(), Prefix: f.prefix,
		CAFile: f.caFile, CertFile: f.certFile, KeyFile: f.keyFile,
		Username: f.username, Password: f.password,
		DialTimeout: 5 * time.Second,
	}
}

type logFlags struct{ level, format string }

func (f *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.format, "log-format", "text", "text or json")
}

func (f *logFlags) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", f.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f.format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: use text or json", f.format)
	}
}

// errUsage marks a command line that cannot be understood (exit status 2).
var errUsage = errors.New("usage")

// usageError is an errUsage whose text is the whole message.
type usageError string

func (e usageError) Error() string        { return string(e) }
func (e usageError) Is(target error) bool { return target == errUsage }

func usagef(format string, a ...any) error { return usageError(fmt.Sprintf(format, a...)) }

// takesArgs holds the flag sets whose command takes arguments besides
// flags (config put's JSON); any other refuses them.
var takesArgs = map[*flag.FlagSet]bool{}

// newFlagSet is the flag set of the command named name ("config get" for a
// verb): its -h prints the command's usage line, summary and flags.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("overlayd "+name, flag.ContinueOnError)
	fs.Usage = func() { printUsage(fs, name) }
	return fs
}

// hidden holds the flags left out of a flag set's -h: they exist for
// tests, not for operators. They still work, from the environment too.
var hidden = map[*flag.FlagSet][]string{}

// hideFlags leaves the flags named out of fs's -h.
func hideFlags(fs *flag.FlagSet, names ...string) {
	hidden[fs] = append(hidden[fs], names...)
}

func printUsage(fs *flag.FlagSet, name string) {
	w := fs.Output()
	base, _, _ := strings.Cut(name, " ")
	c, ok := lookup(base)
	switch {
	case ok && name == base:
		fmt.Fprintf(w, "usage: overlayd %s %s\n\n%s.\n", c.name, c.args, upperFirst(c.summary))
	case ok:
		args := "[flags]"
		if name == "config put" {
			args = "[flags] '<json>' | @file"
		}
		fmt.Fprintf(w, "usage: overlayd %s %s\n\n%s.\n", name, args, upperFirst(c.summary))
	default:
		fmt.Fprintf(w, "usage: overlayd %s [flags]\n", name)
	}
	shown := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	shown.SetOutput(w)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		if !slices.Contains(hidden[fs], f.Name) {
			shown.Var(f.Value, f.Name, f.Usage)
			shown.Lookup(f.Name).DefValue = f.DefValue
			n++
		}
	})
	if n == 0 {
		return
	}
	fmt.Fprintf(w, "\nflags of %s (each also from the environment: --some-flag as OVERLAYD_SOME_FLAG or FLANNELD_SOME_FLAG):\n", fs.Name())
	// Written --name, as the README, the errors and flanneld write them
	// (the flag package takes both).
	var b strings.Builder
	shown.SetOutput(&b)
	shown.PrintDefaults()
	io.WriteString(w, strings.ReplaceAll("\n"+b.String(), "\n  -", "\n  --")[1:])
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// helpOut is where a requested help goes (tests capture it).
var helpOut io.Writer = os.Stdout

// fromEnv records, per flag name, the environment variable that set it
// (and the command line did not override), for explainEnv.
var fromEnv = map[string]string{}

// parseFlags reads every flag from OVERLAYD_<FLAG> or FLANNELD_<FLAG> in the
// environment first (flanneld's convention: --etcd-endpoints is
// FLANNELD_ETCD_ENDPOINTS), then from the command line, which wins. A help
// request prints the usage to stdout and returns flag.ErrHelp.
//
// Flags may stand before or after a command's arguments; a command that
// takes none refuses them, so that a mistyped command line is not run as
// something else (overlayd --iface eth1 status would start the daemon).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if wantsHelp(args) {
		fs.SetOutput(helpOut)
	} else {
		fs.SetOutput(io.Discard) // a bad flag gets a line and a hint (badFlag), not the whole help
	}
	var errs []error
	envSet := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		for _, key := range envKeys(f.Name) {
			if v, ok := os.LookupEnv(key); ok {
				if err := fs.Set(f.Name, v); err != nil {
					if want := valueHint(f); want != "" {
						err = fmt.Errorf("want %s for --%s (%w)", want, f.Name, err)
					}
					errs = append(errs, fmt.Errorf("environment %s=%q: %w", key, v, err))
				}
				envSet[f.Name] = fmt.Sprintf("%s=%q", key, v)
				break
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := parseInterspersed(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return badFlag(fs, err)
	}
	if fs.NArg() > 0 && !takesArgs[fs] {
		return unexpectedArg(fs, fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, origin := range envSet {
		fromEnv[name] = origin
	}
	// A flag given on the command line too is the command line's.
	for _, a := range args {
		if a == "--" {
			break
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && set[name] {
			delete(fromEnv, name)
		}
	}
	return nil
}

// parseInterspersed parses fs's flags wherever they stand among args, and
// leaves the other arguments, in order, as fs.Args(); after "--" all are
// arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) error {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		left := fs.Args()
		if len(left) == 0 {
			break
		}
		if used := len(args) - len(left); used > 0 && args[used-1] == "--" {
			rest = append(rest, left...)
			break
		}
		rest, args = append(rest, left[0]), left[1:]
	}
	return fs.Parse(append([]string{"--"}, rest...)) // sets fs.Args() to rest
}

// flanneldOnly are flanneld's flags that overlayd does not have, with
// what to do instead: a flanneld command line or environment file reused
// as it is gets told, not a typo hint or silence.
var flanneldOnly = map[string]string{
	"iface-regex":                  "give the interface by name or address with --iface",
	"iface-can-reach":              "give the interface by name or address with --iface",
	"public-ipv6":                  "overlayd carries IPv4 only",
	"ip-blackhole-route":           "overlayd adds no blackhole route",
	"ip-masq-fully-random-disable": "--ip-masq uses --random-fully wherever iptables has it",
	"kube-subnet-mgr":              "overlayd takes its leases from etcd only",
	"kube-api-url":                 "overlayd takes its leases from etcd only",
	"kubeconfig-file":              "overlayd takes its leases from etcd only",
	"kube-annotation-prefix":       "overlayd takes its leases from etcd only",
	"set-node-network-unavailable": "overlayd takes its leases from etcd only",
	"net-config-path":              "the network config is read from etcd (overlayd config put)",
	"v":                            "use --log-level",
	"vmodule":                      "use --log-level",
	"log_backtrace_at":             "use --log-level",
	"version":                      "use overlayd version",
}

// flanneldHint is what to say of a flag of flanneld's that overlayd lacks.
func flanneldHint(name string) (string, bool) {
	how, ok := flanneldOnly[name]
	if !ok {
		return "", false
	}
	return fmt.Sprintf("flanneld's --%s is not supported by overlayd: %s", name, how), true
}

// envPrefixes are those of the environment variables that set flags, the
// first winning: --some-flag is OVERLAYD_SOME_FLAG or FLANNELD_SOME_FLAG.
var envPrefixes = []string{"OVERLAYD_", "FLANNELD_"}

// envKeys are the environment variables that set the flag name, in
// envPrefixes' order.
func envKeys(name string) []string {
	key := strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	keys := make([]string, len(envPrefixes))
	for i, prefix := range envPrefixes {
		keys[i] = prefix + key
	}
	return keys
}

// envNotFlags lists, for overlayd run's log, the OVERLAYD_* and FLANNELD_*
// variables of the environment that name no flag of fs: they are ignored,
// and an operator who reuses flanneld's environment file must know.
func envNotFlags(fs *flag.FlagSet) (ignored []string, hints []string) {
	for _, kv := range os.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		var name string
		for _, prefix := range envPrefixes {
			if rest, ok := strings.CutPrefix(key, prefix); ok && rest != "" {
				name = strings.ToLower(strings.ReplaceAll(rest, "_", "-"))
			}
		}
		if name == "" || fs.Lookup(name) != nil {
			continue
		}
		ignored = append(ignored, key)
		if hint, ok := flanneldHint(strings.ReplaceAll(name, "-", "_")); ok {
			hints = append(hints, hint)
		} else if hint, ok := flanneldHint(name); ok {
			hints = append(hints, hint)
		}
	}
	slices.Sort(ignored)
	slices.Sort(hints)
	return ignored, hints
}

// badValue matches the flag package's refusal of a value:
// `invalid value "x" for flag -name: parse error`, or for a boolean
// `invalid boolean value "x" for -name: ...`.
var badValue = regexp.MustCompile(`(?s)^invalid (?:boolean )?value ("(?:[^"\\]|\\.)*") for (?:flag )?-([\w.-]+): (.*)$`)

// valueHint says what a flag takes, for a value it refused ("" when the
// flag's own error says it).
func valueHint(f *flag.Flag) string {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return ""
	}
	switch g.Get().(type) {
	case time.Duration:
		return "a duration with its unit, like 50us, 10s or 24h"
	case bool:
		return "true or false"
	case int, int64:
		return "a whole number"
	case uint, uint64:
		return "a whole number, 0 or more"
	case float64:
		return "a number"
	}
	return ""
}

// badFlag turns the flag package's error into one line that says where
// the flags are listed, with the flag meant when one was misspelt and
// what a flag takes when its value was refused.
func badFlag(fs *flag.FlagSet, err error) error {
	msg := err.Error()
	if m := badValue.FindStringSubmatch(msg); m != nil {
		if f := fs.Lookup(m[2]); f != nil {
			// The flag package's own reasons are "parse error" (what the
			// hint says better) and "value out of range" (kept).
			why := m[3]
			if want := valueHint(f); want != "" && why == "parse error" {
				why = "want " + want
			} else if want != "" {
				why += " (want " + want + ")"
			}
			return usagef("--%s %s: %s (%s --help lists the flags)", m[2], m[1], why, fs.Name())
		}
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		name = strings.TrimPrefix(name, "-")
		return usagef("--%s needs a value (%s --help lists the flags)", name, fs.Name())
	}
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		name = strings.TrimPrefix(name, "-")
		msg = "unknown flag --" + name
		if hint, ok := flanneldHint(name); ok && fs.Name() == "overlayd run" {
			return usagef("%s (%s --help lists the flags)", hint, fs.Name())
		}
		var known []string
		fs.VisitAll(func(f *flag.Flag) {
			if !slices.Contains(hidden[fs], f.Name) {
				known = append(known, f.Name)
			}
		})
		if near := subnet.NearestName(name, known); near != "" {
			msg += fmt.Sprintf("; did you mean --%s?", near)
		}
	}
	return usagef("%s (%s --help lists the flags)", msg, fs.Name())
}

// unexpectedArg refuses an argument given to a command that takes flags
// only: a command name says it was put after flags, where it is not one.
func unexpectedArg(fs *flag.FlagSet, arg string) error {
	if c, ok := lookup(arg); ok {
		return usagef("unexpected argument %q: a command goes first, before its flags (overlayd %s [flags])", arg, c.name)
	}
	return usagef("unexpected argument %q: %s takes flags only (%s --help lists them)", arg, fs.Name(), fs.Name())
}

func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help", "--h":
			return true
		}
	}
	return false
}

// explainEnv adds to an error that names a flag (--iface "x": ...) the
// environment variable the value came from, when it did: the operator
// looks for --iface in the unit file and finds none.
func explainEnv(err error) error {
	msg := err.Error()
	var notes []string
	for _, name := range slices.Sorted(maps.Keys(fromEnv)) {
		i := strings.Index(msg, "--"+name)
		if i < 0 {
			continue
		}
		if rest := msg[i+2+len(name):]; rest != "" && (rest[0] == '-' || rest[0] >= 'a' && rest[0] <= 'z') {
			continue // a longer flag name
		}
		notes = append(notes, fmt.Sprintf("--%s was set by the environment: %s", name, fromEnv[name]))
	}
	if len(notes) == 0 {
		return err
	}
	return fmt.Errorf("%w\n(%s)", err, strings.Join(notes, "; "))
}
