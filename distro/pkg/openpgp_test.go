package pkg

import (
	"strings"
	"testing"
)

func TestParseArmoredKeys(t *testing.T) {
	// testdata/test-key.asc was made with gpg --quick-gen-key; gpg reports
	// key id 9DE48C3D318BB87D, created 1795692278, and rpm --import names
	// it gpg-pubkey-318bb87d-6b0816f6.
	keys, err := parseArmoredKeys(testKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Fatalf("got %d keys, want 1", len(keys))
	}
	if got, want := keys[0].rpmName(), "gpg-pubkey-318bb87d-6b0816f6"; got != want {
		t.Errorf("rpm name = %s, want %s", got, want)
	}
	if keys[0].Created != 1795692278 {
		t.Errorf("created = %d", keys[0].Created)
	}
}

func TestParseArmoredKeysInvalid(t *testing.T) {
	key := string(testKey(t))
	tests := map[string]struct{ key, err string }{
		"binary":      {"\x99\x01\x0d", "not an ASCII-armored public key block"},
		"private":     {"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nxx\n-----END PGP PRIVATE KEY BLOCK-----\n", "not an ASCII-armored public key block"},
		"no end":      {key[:strings.Index(key, "-----END")], "no -----END PGP PUBLIC KEY BLOCK----- line"},
		"bad base64":  {"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!\n-----END PGP PUBLIC KEY BLOCK-----\n", "armor"},
		"truncated":   {"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQENBGkZ\n-----END PGP PUBLIC KEY BLOCK-----\n", "truncated"},
		"empty armor": {"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n-----END PGP PUBLIC KEY BLOCK-----\n", "holds no public key"},
		// A public key packet (new format, tag 6) with an empty body, and
		// one with a version but no creation time.
		"empty key packet": {"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxgA=\n-----END PGP PUBLIC KEY BLOCK-----\n", "truncated public key packet"},
		"short key packet": {"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxgIEAA==\n-----END PGP PUBLIC KEY BLOCK-----\n", "truncated public key packet"},
		"version 3 key":    {"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxgYDAAAAAAA=\n-----END PGP PUBLIC KEY BLOCK-----\n", "version 3 keys are not supported"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := parseArmoredKeys([]byte(tt.key))
			errContains(t, err, tt.err)
		})
	}
}
