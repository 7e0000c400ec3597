package pkg

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

const (
	armorBegin = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
	armorEnd   = "-----END PGP PUBLIC KEY BLOCK-----"
)

// pgpKey is what kthw needs to know of an OpenPGP public key: its id and
// creation time, which name it in rpm's database (gpg-pubkey-<id>-<time>).
type pgpKey struct {
	KeyID   [8]byte
	Created uint32
}

// rpmName is the version-release of the gpg-pubkey package rpm makes of the
// key: the last 4 bytes of the key id and the creation time, in lowercase hex.
func (k pgpKey) rpmName() string {
	return fmt.Sprintf("gpg-pubkey-%x-%08x", k.KeyID[4:], k.Created)
}

// checkArmoredKey tells whether key is an ASCII-armored OpenPGP public key
// block, the form every backend stores as is.
func checkArmoredKey(key []byte) error {
	_, err := parseArmoredKeys(key)
	return err
}

// parseArmoredKeys returns the primary keys of an ASCII-armored OpenPGP
// public key block (RFC 4880 §6 armor, §4.2 packets, §12.2 key ids).
func parseArmoredKeys(armored []byte) ([]pgpKey, error) {
	data, err := dearmor(armored)
	if err != nil {
		return nil, err
	}
	var keys []pgpKey
	for len(data) > 0 {
		tag, body, rest, err := nextPacket(data)
		if err != nil {
			return nil, err
		}
		data = rest
		if tag != 6 { // public key; subkeys (14), user ids, signatures follow
			continue
		}
		if len(body) < 6 {
			return nil, errors.New("parse OpenPGP key: truncated public key packet")
		}
		if body[0] != 4 {
			return nil, fmt.Errorf("parse OpenPGP key: version %d keys are not supported (want 4)", body[0])
		}
		h := sha1.New()
		h.Write([]byte{0x99, byte(len(body) >> 8), byte(len(body))})
		h.Write(body)
		fp := h.Sum(nil)
		var k pgpKey
		copy(k.KeyID[:], fp[12:20])
		k.Created = binary.BigEndian.Uint32(body[1:5])
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("parse OpenPGP key: the block holds no public key")
	}
	return keys, nil
}

// dearmor returns the binary content of the first public key block in b.
func dearmor(b []byte) ([]byte, error) {
	text := strings.ReplaceAll(string(b), "\r\n", "\n")
	start := strings.Index(text, armorBegin)
	if start < 0 {
		return nil, errors.New("parse OpenPGP key: not an ASCII-armored public key block (no " + armorBegin + " line)")
	}
	text = text[start+len(armorBegin):]
	end := strings.Index(text, armorEnd)
	if end < 0 {
		return nil, errors.New("parse OpenPGP key: the armor has no " + armorEnd + " line")
	}
	lines := strings.Split(text[:end], "\n")[1:]
	// Armor headers ("Version: ...") run up to the first blank line.
	for i, l := range lines {
		if strings.TrimSpace(l) == "" {
			lines = lines[i+1:]
			break
		}
		if !strings.Contains(l, ": ") {
			break // no headers
		}
	}
	var body strings.Builder
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "=") { // CRC24
			break
		}
		body.WriteString(l)
	}
	data, err := base64.StdEncoding.DecodeString(body.String())
	if err != nil {
		return nil, fmt.Errorf("parse OpenPGP key: armor: %w", err)
	}
	return data, nil
}

// nextPacket splits the first OpenPGP packet off data.
func nextPacket(data []byte) (tag byte, body, rest []byte, err error) {
	bad := errors.New("parse OpenPGP key: truncated or malformed packet")
	if len(data) < 2 || data[0]&0x80 == 0 {
		return 0, nil, nil, bad
	}
	var n, hdr int
	if data[0]&0x40 != 0 { // new format
		tag = data[0] & 0x3f
		switch o := int(data[1]); {
		case o < 192:
			n, hdr = o, 2
		case o < 224:
			if len(data) < 3 {
				return 0, nil, nil, bad
			}
			n, hdr = (o-192)<<8+int(data[2])+192, 3
		case o == 255:
			if len(data) < 6 {
				return 0, nil, nil, bad
			}
			n, hdr = int(binary.BigEndian.Uint32(data[2:6])), 6
		default:
			return 0, nil, nil, errors.New("parse OpenPGP key: partial body lengths are not valid in keys")
		}
	} else { // old format
		tag = (data[0] >> 2) & 0x0f
		switch data[0] & 3 {
		case 0:
			n, hdr = int(data[1]), 2
		case 1:
			if len(data) < 3 {
				return 0, nil, nil, bad
			}
			n, hdr = int(binary.BigEndian.Uint16(data[1:3])), 3
		case 2:
			if len(data) < 5 {
				return 0, nil, nil, bad
			}
			n, hdr = int(binary.BigEndian.Uint32(data[1:5])), 5
		default:
			return 0, nil, nil, errors.New("parse OpenPGP key: indeterminate packet lengths are not valid in keys")
		}
	}
	if n < 0 || hdr+n > len(data) {
		return 0, nil, nil, bad
	}
	return tag, data[hdr : hdr+n], data[hdr+n:], nil
}
