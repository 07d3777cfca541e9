//go:build !linux

package netns

import (
	"errors"
	"fmt"
)

func enter(path string) error {
	return fmt.Errorf("enter %s: %w", path, errors.ErrUnsupported)
}
