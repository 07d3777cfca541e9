package main

import (
	"flag"
	"slices"
	"strings"
	"testing"
)

func TestEtcdFlagsValidateNamesTheFlag(t *testing.T) {
	cases := []struct {
		args []string
		flag string // "" when valid
	}{
		{nil, ""},
		{[]string{"--etcd-endpoints", " , "}, "--etcd-endpoints"},
		{[]string{"--etcd-endpoints", "htp://198.18.0.254:2379"}, "--etcd-endpoints"},
		{[]string{"--etcd-endpoints", "http://198.18.0.254"}, "--etcd-endpoints"},
		{[]string{"--etcd-endpoints", "http://198.18.0.254:2379,198.18.0.253:2379"}, "--etcd-endpoints"},
		{[]string{"--etcd-endpoints", "https://198.18.0.254:2379, http://198.18.0.253:2379"}, ""},
		{[]string{"--etcd-prefix", "coreos.com"}, "--etcd-prefix"},
	}
	for _, tc := range cases {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		var ef etcdFlags
		ef.register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := ef.validate()
		switch {
		case tc.flag == "" && err != nil:
			t.Errorf("%q: rejected: %v", tc.args, err)
		case tc.flag != "" && (err == nil || !strings.Contains(err.Error(), tc.flag)):
			t.Errorf("%q: error %v does not name %s", tc.args, err, tc.flag)
		}
	}
}

// TestFlanneldOnlyOptions: flanneld's flags that overlayd lacks are named
// as such on the command line, and in the environment listed with the
// other variables that name no flag, rather than ignored in silence.
func TestFlanneldOnlyOptions(t *testing.T) {
	t.Setenv("FLANNELD_IFACE_REGEX", "eth.*")
	t.Setenv("OVERLAYD_NOSUCH", "1")
	t.Setenv("OVERLAYD_IFACE", "lo") // a flag: not listed
	fs := newFlagSet("run")
	fs.String("iface", "", "")
	ignored, hints := envNotFlags(fs)
	if want := []string{"FLANNELD_IFACE_REGEX", "OVERLAYD_NOSUCH"}; !slices.Equal(ignored, want) {
		t.Errorf("ignored %q, want %q", ignored, want)
	}
	if len(hints) != 1 || !strings.Contains(hints[0], "flanneld's --iface-regex is not supported by overlayd: give the interface by name or address with --iface") {
		t.Errorf("hints %q, want the one for --iface-regex", hints)
	}
	code, _, errOut := help(t, "--iface-regex", "eth.*")
	if code != 2 || !strings.Contains(errOut, "flanneld's --iface-regex is not supported by overlayd") {
		t.Errorf("--iface-regex: exit %d, stderr %s", code, errOut)
	}
}
