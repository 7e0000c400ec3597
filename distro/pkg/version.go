package pkg

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MatchVersion reports whether version (a manager's exact version:
// "1.31.2-1.1", "1:1.6.20~ds1-1", "1.31.2-150500.1.1") is what want asks
// for. want is one of:
//
//   - "" (any version);
//   - an exact version, with a revision/release ("1.31.2-1.1"); an epoch may
//     be left out when want has none;
//   - an upstream version, with or without a leading "v" ("1.31.2",
//     "v1.31.2", "1.31"): it matches every version whose upstream part is
//     that version or starts with it followed by ".", "~", "+" or "^"
//     ("1.31.2" matches "1.31.2-1.1" and "1.31.2~rc1-1" but not
//     "1.31.20-1.1").
func MatchVersion(version, want string) bool {
	want = trimV(want)
	if want == "" || version == want {
		return true
	}
	epoch, rest := splitEpoch(version)
	wantEpoch, wantRest := splitEpoch(want)
	if wantEpoch != "" && wantEpoch != epoch {
		return false
	}
	if strings.Contains(wantRest, "-") {
		return rest == wantRest
	}
	upstream := rest
	if i := strings.LastIndexByte(rest, '-'); i >= 0 {
		upstream = rest[:i]
	}
	after, ok := strings.CutPrefix(upstream, wantRest)
	return ok && (after == "" || strings.ContainsRune(".~+^", rune(after[0])))
}

// trimV drops the "v" of "v1.31.2".
func trimV(v string) string {
	if len(v) > 1 && v[0] == 'v' && v[1] >= '0' && v[1] <= '9' {
		return v[1:]
	}
	return v
}

// splitEpoch splits "1:2.3-4" into "1" and "2.3-4"; no epoch gives "".
func splitEpoch(v string) (string, string) {
	if i := strings.IndexByte(v, ':'); i > 0 {
		if _, err := strconv.Atoi(v[:i]); err == nil {
			return v[:i], v[i+1:]
		}
	}
	return "", v
}

// pickVersion returns the newest of offered (by cmp) that matches want, or
// an error wrapping ErrNotFound that lists what is offered.
func pickVersion(name, want string, offered []string, cmp func(a, b string) int) (string, error) {
	if len(offered) == 0 {
		return "", fmt.Errorf("package %s: %w in the configured repositories (is the repository added and the index fresh?)", name, ErrNotFound)
	}
	best := ""
	for _, v := range offered {
		if MatchVersion(v, want) && (best == "" || cmp(v, best) > 0) {
			best = v
		}
	}
	if best != "" {
		return best, nil
	}
	sorted := slices.Clone(offered)
	slices.SortFunc(sorted, func(a, b string) int { return cmp(b, a) })
	sorted = slices.Compact(sorted)
	const show = 12
	list := strings.Join(sorted[:min(show, len(sorted))], ", ")
	if len(sorted) > show {
		list += fmt.Sprintf(", ... (%d more)", len(sorted)-show)
	}
	return "", fmt.Errorf("package %s version %s: %w; the repositories offer %s", name, want, ErrNotFound, list)
}

// compareDeb compares two Debian versions ([epoch:]upstream[-revision]) the
// way dpkg does.
func compareDeb(a, b string) int {
	ea, ua, ra := splitDeb(a)
	eb, ub, rb := splitDeb(b)
	if ea != eb {
		return cmp.Compare(ea, eb)
	}
	if c := verrevcmp(ua, ub); c != 0 {
		return cmp.Compare(c, 0)
	}
	return cmp.Compare(verrevcmp(ra, rb), 0)
}

func splitDeb(v string) (epoch int, upstream, revision string) {
	e, rest := splitEpoch(v)
	if e != "" {
		epoch, _ = strconv.Atoi(e)
	}
	upstream = rest
	if i := strings.LastIndexByte(rest, '-'); i >= 0 {
		upstream, revision = rest[:i], rest[i+1:]
	}
	return epoch, upstream, revision
}

// debOrder is dpkg's character order: "~" before everything, even the end
// of the string, then letters, then other characters.
func debOrder(s string, i int) int {
	if i >= len(s) {
		return 0
	}
	c := s[i]
	switch {
	case isDigit(c):
		return 0
	case isAlpha(c):
		return int(c)
	case c == '~':
		return -1
	default:
		return int(c) + 256
	}
}

// verrevcmp is dpkg's lib/dpkg/version.c verrevcmp.
func verrevcmp(a, b string) int {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		firstDiff := 0
		for (i < len(a) && !isDigit(a[i])) || (j < len(b) && !isDigit(b[j])) {
			ac, bc := debOrder(a, i), debOrder(b, j)
			if ac != bc {
				return ac - bc
			}
			i++
			j++
		}
		for i < len(a) && a[i] == '0' {
			i++
		}
		for j < len(b) && b[j] == '0' {
			j++
		}
		for i < len(a) && j < len(b) && isDigit(a[i]) && isDigit(b[j]) {
			if firstDiff == 0 {
				firstDiff = int(a[i]) - int(b[j])
			}
			i++
			j++
		}
		if i < len(a) && isDigit(a[i]) {
			return 1
		}
		if j < len(b) && isDigit(b[j]) {
			return -1
		}
		if firstDiff != 0 {
			return firstDiff
		}
	}
	return 0
}

// compareRPM compares two rpm versions ([epoch:]version-release) the way
// rpm does (a missing epoch is 0).
func compareRPM(a, b string) int {
	ea, va, ra := splitRPM(a)
	eb, vb, rb := splitRPM(b)
	if ea != eb {
		return cmp.Compare(ea, eb)
	}
	if c := rpmvercmp(va, vb); c != 0 {
		return c
	}
	return rpmvercmp(ra, rb)
}

func splitRPM(v string) (epoch int, version, release string) {
	return splitDeb(v) // same shape: [E:]V[-R], split at the last "-"
}

// rpmvercmp is rpm's rpmio/rpmvercmp.c.
func rpmvercmp(a, b string) int {
	if a == b {
		return 0
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		for i < len(a) && !isAlnum(a[i]) && a[i] != '~' && a[i] != '^' {
			i++
		}
		for j < len(b) && !isAlnum(b[j]) && b[j] != '~' && b[j] != '^' {
			j++
		}
		// "~" sorts before everything, even the end.
		if (i < len(a) && a[i] == '~') || (j < len(b) && b[j] == '~') {
			if i >= len(a) || a[i] != '~' {
				return 1
			}
			if j >= len(b) || b[j] != '~' {
				return -1
			}
			i++
			j++
			continue
		}
		// "^" sorts after the end but before anything else.
		if (i < len(a) && a[i] == '^') || (j < len(b) && b[j] == '^') {
			if i >= len(a) {
				return -1
			}
			if j >= len(b) {
				return 1
			}
			if a[i] != '^' {
				return 1
			}
			if b[j] != '^' {
				return -1
			}
			i++
			j++
			continue
		}
		if i >= len(a) || j >= len(b) {
			break
		}
		si, sj := i, j
		isNum := isDigit(a[i])
		if isNum {
			for i < len(a) && isDigit(a[i]) {
				i++
			}
			for j < len(b) && isDigit(b[j]) {
				j++
			}
		} else {
			for i < len(a) && isAlpha(a[i]) {
				i++
			}
			for j < len(b) && isAlpha(b[j]) {
				j++
			}
		}
		segA, segB := a[si:i], b[sj:j]
		if segB == "" {
			// Different segment types: a number is newer than letters.
			if isNum {
				return 1
			}
			return -1
		}
		if isNum {
			segA, segB = strings.TrimLeft(segA, "0"), strings.TrimLeft(segB, "0")
			if len(segA) != len(segB) {
				return cmp.Compare(len(segA), len(segB))
			}
		}
		if c := strings.Compare(segA, segB); c != 0 {
			return c
		}
	}
	switch {
	case i >= len(a) && j >= len(b):
		return 0
	case i < len(a):
		return 1
	default:
		return -1
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }
func isAlnum(c byte) bool { return isDigit(c) || isAlpha(c) }
