package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

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

// hideFlags leaves the flags named out of fs's -h: they exist for tests,
// not for operators. They still work, from the environment too.
func hideFlags(fs *flag.FlagSet, names ...string) {
	fs.Usage = func() {
		shown := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
		shown.SetOutput(fs.Output())
		fs.VisitAll(func(f *flag.Flag) {
			if !slices.Contains(names, f.Name) {
				shown.Var(f.Value, f.Name, f.Usage)
				shown.Lookup(f.Name).DefValue = f.DefValue
			}
		})
		fmt.Fprintf(fs.Output(), "Usage of %s:\n", fs.Name())
		shown.PrintDefaults()
	}
}

// parseFlags reads every flag from OVERLAYD_<FLAG> or FLANNELD_<FLAG> in the
// environment first (flanneld's convention: --etcd-endpoints is
// FLANNELD_ETCD_ENDPOINTS), then from the command line, which wins.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		key := strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		for _, prefix := range []string{"OVERLAYD_", "FLANNELD_"} {
			if v, ok := os.LookupEnv(prefix + key); ok {
				if err := fs.Set(f.Name, v); err != nil {
					errs = append(errs, fmt.Errorf("environment %s%s=%q: %w", prefix, key, v, err))
				}
				break
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return fs.Parse(args)
}
