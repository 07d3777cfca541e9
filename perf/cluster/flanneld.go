package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// FlanneldEnv names a flanneld binary for the tests that run a real one;
// without it they look for the project's reference build.
const FlanneldEnv = "OVERLAYD_FLANNELD"

// referenceFlanneld is the reference flanneld v0.28.9, from the module's
// root: the project's shared anchors lie beside the clone on its
// development machines and in CI (see their README).
const referenceFlanneld = "../shared/anchors/flanneld-v0.28.9"

// Flanneld finds the flanneld that interop tests run: $OVERLAYD_FLANNELD,
// else the reference build beside the clone. Its error says how to give
// one, for a test's skip message.
func Flanneld() (string, error) {
	root, rootErr := ModuleRoot()
	if bin := os.Getenv(FlanneldEnv); bin != "" {
		// Relative to where make test runs, the module's root, not to
		// the package directory go test runs each test in.
		path := bin
		if !filepath.IsAbs(path) && rootErr == nil {
			path = filepath.Join(root, path)
		}
		if err := executable(path); err != nil {
			return "", &EnvError{fmt.Errorf("%s=%s: %w", FlanneldEnv, bin, err)}
		}
		return path, nil
	}
	if rootErr != nil {
		return "", fmt.Errorf("no flanneld: %w; set %s=/path/to/flanneld (v0.28.9) to run with one", rootErr, FlanneldEnv)
	}
	bin := filepath.Join(root, filepath.FromSlash(referenceFlanneld))
	if err := executable(bin); err != nil {
		return "", fmt.Errorf("no flanneld: %w; set %s=/path/to/flanneld (v0.28.9) to run with one", err, FlanneldEnv)
	}
	return bin, nil
}

// EnvError is Flanneld's error for an $OVERLAYD_FLANNELD that cannot run:
// a test fails on it rather than skip, since someone asked for flanneld.
type EnvError struct{ error }

func (e *EnvError) Unwrap() error { return e.error }

func executable(path string) error {
	st, err := os.Stat(path)
	switch {
	case err != nil:
		return err
	case st.IsDir() || st.Mode()&0o111 == 0:
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// ModuleRoot is the directory of the go.mod above the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
