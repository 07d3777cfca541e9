package main

import (
	"flag"
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
