package identity

import (
	"errors"
	"os"
)

// swapByRenames exchanges a and b by renaming b aside. If the second rename
// fails, b is put back, so a failure leaves both as they were.
func swapByRenames(a, b string) error {
	aside := a + ".old"
	if err := os.Rename(b, aside); err != nil {
		return err
	}
	if err := os.Rename(a, b); err != nil {
		if rerr := os.Rename(aside, b); rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	}
	return os.Rename(aside, a)
}
