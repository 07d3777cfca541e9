package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEFirstPart: a newcomer reads the two commands before the
// internals, with what the machine needs (the go.mod Go version, root),
// how long the first build takes and where the binaries are; and `make
// test` says why root tests skipped, which go test shows only with -v.
func TestREADMEFirstPart(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	r := string(readme)
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(string(gomod))
	if goVersion == nil {
		t.Fatal("go.mod has no go line")
	}
	if demo, internals := strings.Index(r, "make demo"), strings.Index(r, "IFF_VNET_HDR"); demo < 0 || demo > internals {
		t.Error("README: the two commands do not come before the internals")
	}
	for _, want := range []string{"Go " + goVersion[1] + " or newer", "as root", "two minutes", "`bin/`", "make install", "-v"} {
		if !strings.Contains(r, want) {
			t.Errorf("README does not say %q", want)
		}
	}
	test := regexp.MustCompile(`(?ms)^test:.*?\n\n`).FindString(string(makefile))
	if !strings.Contains(test, `"$$(id -u)" = 0`) || !strings.Contains(test, "SKIPNOTE") {
		t.Errorf("make test does not tell a non-root user why tests skipped:\n%s", test)
	}
}
