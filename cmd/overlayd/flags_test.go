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
