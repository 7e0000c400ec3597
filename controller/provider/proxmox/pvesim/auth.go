package pvesim

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ticketLifetime is how long a ticket is valid (pve-access-control: 2h).
const ticketLifetime = 2 * time.Hour

// authenticate checks the API token or the ticket cookie (and, for
// writes, the CSRF token) the way pveproxy's auth_handler does.
func (s *Server) authenticate(req *request) error {
	h := req.r.Header
	ticket := cookieValue(h.Get("Cookie"), "PVEAuthCookie")
	if ticket == "" {
		ticket = authValue(h.Get("Authorization"), "PVEAuthCookie")
	}
	if ticket == "" {
		tok := authValue(h.Get("Authorization"), "PVEAPIToken")
		if tok == "" {
			return unauthorized("No ticket")
		}
		authid, ok := s.verifyToken(tok)
		if !ok {
			return unauthorized("Authentication failed!")
		}
		req.authid = authid
		req.user, req.tokenid, _ = strings.Cut(authid, "!")
		return nil
	}
	user, ok := s.verifyTicket(ticket)
	if !ok {
		return unauthorized("Authentication failed!")
	}
	req.authid, req.user = user, user
	if req.method != http.MethodGet && !s.verifyCSRF(user, h.Get("CSRFPreventionToken")) {
		return unauthorized("Permission denied - invalid csrf token")
	}
	return nil
}

func unauthorized(msg string) *apiError {
	return &apiError{status: http.StatusUnauthorized, msg: msg, bodyless: true}
}

// authValue extracts NAME=VALUE or "NAME VALUE" from an Authorization header.
func authValue(header, name string) string {
	if v, ok := strings.CutPrefix(header, name+"="); ok {
		return strings.TrimSpace(v)
	}
	if v, ok := strings.CutPrefix(header, name+" "); ok {
		return strings.TrimSpace(v)
	}
	return ""
}

func cookieValue(header, name string) string {
	for _, part := range strings.Split(header, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok && k == name {
			if u, err := url.PathUnescape(v); err == nil {
				return u
			}
			return v
		}
	}
	return ""
}

// verifyToken checks "USER@REALM!TOKENID=SECRET".
func (s *Server) verifyToken(tok string) (string, bool) {
	id, secret, ok := strings.Cut(tok, "=")
	if !ok || !strings.Contains(id, "!") {
		return "", false
	}
	for _, t := range s.cfg.Tokens {
		if t.ID == id && subtle.ConstantTimeCompare([]byte(t.Secret), []byte(secret)) == 1 {
			return id, true
		}
	}
	return "", false
}

// newTicket makes "PVE:user@realm:TIMESTAMP::SIGNATURE".
func (s *Server) newTicket(user string, at time.Time) string {
	plain := fmt.Sprintf("PVE:%s:%08X", user, at.Unix())
	return plain + "::" + s.sign(plain)
}

func (s *Server) verifyTicket(t string) (string, bool) {
	plain, sig, ok := strings.Cut(t, "::")
	if !ok || !hmac.Equal([]byte(sig), []byte(s.sign(plain))) {
		return "", false
	}
	parts := strings.Split(plain, ":")
	if len(parts) != 3 || parts[0] != "PVE" {
		return "", false
	}
	ts, err := strconv.ParseInt(parts[2], 16, 64)
	if err != nil {
		return "", false
	}
	age := time.Since(time.Unix(ts, 0))
	if age < -5*time.Minute || age > ticketLifetime {
		return "", false
	}
	return parts[1], true
}

func (s *Server) newCSRF(user string, at time.Time) string {
	ts := fmt.Sprintf("%08X", at.Unix())
	return ts + ":" + s.sign(ts+":"+user)
}

func (s *Server) verifyCSRF(user, token string) bool {
	ts, sig, ok := strings.Cut(token, ":")
	if !ok || len(ts) != 8 {
		return false
	}
	return hmac.Equal([]byte(sig), []byte(s.sign(ts+":"+user)))
}

func (s *Server) sign(text string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(text))
	return base64.RawStdEncoding.EncodeToString(m.Sum(nil))
}

// createTicket is POST /access/ticket. A valid ticket of the user works as
// the password (ticket renewal).
func (s *Server) createTicket(req *request) (any, error) {
	if err := validate(req.params, map[string]pspec{
		"username":      {typ: tString, maxLen: 64},
		"password":      {typ: tString},
		"realm":         {typ: tString, optional: true},
		"otp":           {typ: tString, optional: true},
		"path":          {typ: tString, optional: true},
		"privs":         {typ: tString, optional: true},
		"tfa-challenge": {typ: tString, optional: true},
		"new-format":    {typ: tBool, optional: true},
	}); err != nil {
		return nil, err
	}
	user := req.str("username")
	if realm := req.str("realm"); realm != "" && !strings.Contains(user, "@") {
		user += "@" + realm
	}
	pw := req.str("password")
	ok := false
	for _, u := range s.cfg.Users {
		if u.Name == user && subtle.ConstantTimeCompare([]byte(u.Password), []byte(pw)) == 1 {
			ok = true
		}
	}
	if !ok {
		if tu, valid := s.verifyTicket(pw); valid && tu == user {
			ok = true
		}
	}
	if !ok {
		return nil, &apiError{status: http.StatusUnauthorized, msg: "authentication failure"}
	}
	now := time.Now()
	res := map[string]any{
		"username":            user,
		"ticket":              s.newTicket(user, now),
		"CSRFPreventionToken": s.newCSRF(user, now),
		"cap":                 capabilities(),
	}
	if s.cfg.ClusterName != "" {
		res["clustername"] = s.cfg.ClusterName
	}
	return res, nil
}

// capabilities is the "cap" object of a ticket for a full administrator.
func capabilities() map[string]map[string]int {
	all := func(privs ...string) map[string]int {
		m := map[string]int{}
		for _, p := range privs {
			m[p] = 1
		}
		return m
	}
	return map[string]map[string]int{
		"vms":     all("VM.Allocate", "VM.Audit", "VM.Clone", "VM.Config.CDROM", "VM.Config.CPU", "VM.Config.Cloudinit", "VM.Config.Disk", "VM.Config.HWType", "VM.Config.Memory", "VM.Config.Network", "VM.Config.Options", "VM.Console", "VM.GuestAgent.Audit", "VM.GuestAgent.Unrestricted", "VM.Migrate", "VM.PowerMgmt", "VM.Snapshot", "VM.Snapshot.Rollback", "Permissions.Modify"),
		"storage": all("Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Audit", "Permissions.Modify"),
		"nodes":   all("Sys.Audit", "Sys.Console", "Sys.Modify", "Sys.PowerMgmt", "Sys.Syslog", "Permissions.Modify"),
		"access":  all("Group.Allocate", "Permissions.Modify", "Realm.Allocate", "Realm.AllocateUser", "User.Modify"),
		"dc":      all("Sys.Audit", "Sys.Modify", "SDN.Allocate", "SDN.Audit", "SDN.Use"),
		"sdn":     all("SDN.Allocate", "SDN.Audit", "SDN.Use", "Permissions.Modify"),
		"mapping": all("Mapping.Audit", "Mapping.Modify", "Mapping.Use", "Permissions.Modify"),
	}
}

// domains is GET /access/domains.
func (s *Server) domains(*request) (any, error) {
	return []map[string]any{
		{"realm": "pam", "type": "pam", "comment": "Linux PAM standard authentication"},
		{"realm": "pve", "type": "pve", "comment": "Proxmox VE authentication server"},
	}, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
