package main

import (
	"runtime/debug"
	"testing"
)

func TestVCSVersion(t *testing.T) {
	rev := []debug.BuildSetting{{Key: "vcs.revision", Value: "5427e9a0cff15f752519d919620037a4908de4a1"}}
	dirty := append(rev, debug.BuildSetting{Key: "vcs.modified", Value: "true"})
	cases := []struct {
		info *debug.BuildInfo
		ok   bool
		want string
	}{
		{nil, false, "dev"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true, "dev"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v1.2.0"}, Settings: rev}, true, "v1.2.0"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: rev}, true, "5427e9a"},
		{&debug.BuildInfo{Settings: dirty}, true, "5427e9a-dirty"},
	}
	for _, tc := range cases {
		if got := vcsVersion(tc.info, tc.ok); got != tc.want {
			t.Errorf("vcsVersion(%+v) = %q, want %q", tc.info, got, tc.want)
		}
	}
}
