package module

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// lookupID resolves a user or group, given as a name or a numeric id, in a
// passwd(5) or group(5) file. Both put the name in the first field and the id
// in the third. Reading the files (rather than using os/user) keeps lookups
// under the Env's Root and needs no cgo.
func lookupID(dbPath, nameOrID string) (int, error) {
	if id, err := strconv.ParseUint(nameOrID, 10, 31); err == nil {
		return int(id), nil
	}
	f, err := os.Open(dbPath)
	if err != nil {
		return -1, fmt.Errorf("look up %q: %w", nameOrID, err)
	}
	defer f.Close()
	id, err := findID(f, nameOrID)
	if err != nil {
		return -1, fmt.Errorf("look up %q in %s: %w", nameOrID, dbPath, err)
	}
	return id, nil
}

// findID returns the id of name in a passwd- or group-format database.
func findID(r io.Reader, name string) (int, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) < 3 || fields[0] != name {
			continue
		}
		id, err := strconv.ParseUint(fields[2], 10, 31)
		if err != nil {
			return -1, fmt.Errorf("parse id of %q: %w", name, err)
		}
		return int(id), nil
	}
	if err := sc.Err(); err != nil {
		return -1, err
	}
	return -1, fmt.Errorf("%q not found", name)
}
