package pkg

import (
	"context"
	"fmt"
	"strings"
)

// removeInstalled is Remove for every backend: it releases the holds of
// the named packages that are installed, then removes them with rm. Names
// that are not installed are ignored.
func removeInstalled(ctx context.Context, m Manager, names []string, rm func(names []string) error) error {
	installed, err := m.Installed(ctx, names)
	if err != nil || len(installed) == 0 {
		return err
	}
	list := sortedKeys(installed)
	held, err := m.Held(ctx, list)
	if err != nil {
		return err
	}
	if err := m.Hold(ctx, trueKeys(held), false); err != nil {
		return err
	}
	if err := rm(list); err != nil {
		return fmt.Errorf("remove %s: %w", strings.Join(list, ", "), err)
	}
	return nil
}
