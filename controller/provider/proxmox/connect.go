package proxmox

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	pve "github.com/luthermonson/go-proxmox"
)

// Credentials authenticate to the API: an API token, or a user and
// password. They are held in memory only, and never logged or printed.
type Credentials struct {
	// TokenID is USER@REALM!TOKENNAME; TokenSecret its secret.
	TokenID, TokenSecret string
	// Username is USER@REALM; Password its password.
	Username, Password string
}

// String hides the secrets, should credentials ever be formatted.
func (c Credentials) String() string {
	if c.TokenID != "" {
		return "token " + c.TokenID
	}
	return "user " + c.Username
}

// GoString hides the secrets from %#v too.
func (c Credentials) GoString() string { return c.String() }

// ConnectOptions say how to reach the API.
type ConnectOptions struct {
	// Endpoint is the API's URL, https://pve.example:8006; /api2/json is
	// appended unless present.
	Endpoint    string
	Credentials Credentials
	// CAFile is a PEM bundle to trust instead of the system's pool.
	CAFile string
	// InsecureSkipVerify turns off certificate verification (labs only).
	InsecureSkipVerify bool
	// Timeout bounds every request (go-proxmox's default client has none).
	Timeout time.Duration
	// RootCAs, when set, is trusted instead of CAFile (tests).
	RootCAs *x509.CertPool
	// WrapTransport, when set, wraps the HTTP transport (tests: lost
	// answers, counting).
	WrapTransport func(http.RoundTripper) http.RoundTripper
	Logger        *slog.Logger
}

// BaseURL returns the API base URL for an endpoint.
func BaseURL(endpoint string) string {
	u := strings.TrimRight(endpoint, "/")
	if !strings.HasSuffix(u, "/api2/json") {
		u += "/api2/json"
	}
	return u
}

// Connect builds a client, logs in (password logins get their ticket now,
// once, rather than from many goroutines at their first request) and checks
// the credentials with GET /version.
func Connect(ctx context.Context, o ConnectOptions) (*pve.Client, *pve.Version, error) {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.InsecureSkipVerify} //nolint:gosec // explicit lab switch
	switch {
	case o.RootCAs != nil:
		tlsConf.RootCAs = o.RootCAs
	case o.CAFile != "":
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("proxmox CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("proxmox CA file %s holds no PEM certificate", o.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	hc := &http.Client{Transport: tr, Timeout: o.Timeout}
	if o.WrapTransport != nil {
		hc.Transport = o.WrapTransport(tr)
	}

	opts := []pve.Option{pve.WithHTTPClient(hc), pve.WithUserAgent("kthw-controller"), pve.WithLogger(quietLogger{o.Logger})}
	cr := o.Credentials
	switch {
	case cr.TokenID != "":
		if cr.TokenSecret == "" {
			return nil, nil, errors.New("proxmox: the API token secret is empty")
		}
		opts = append(opts, pve.WithAPIToken(cr.TokenID, cr.TokenSecret))
	case cr.Username != "":
		opts = append(opts, pve.WithCredentials(&pve.Credentials{Username: cr.Username, Password: cr.Password}))
	default:
		return nil, nil, errors.New("proxmox: no credentials: give an API token or a user and password")
	}
	c := pve.NewClient(BaseURL(o.Endpoint), opts...)
	if cr.TokenID == "" {
		if err := c.CreateSession(ctx); err != nil {
			return nil, nil, authError("log in to Proxmox as "+cr.Username, err)
		}
	}
	// Client.Version returns its cached value, read before the request
	// fills it; ask directly.
	v := &pve.Version{}
	if err := c.Get(ctx, "/version", v); err != nil {
		return nil, nil, authError("connect to Proxmox at "+o.Endpoint+" as "+cr.String(), err)
	}
	return c, v, nil
}

// quietLogger keeps go-proxmox's own logging (request and response bodies
// at debug level) out of the output; its errors go to the debug log.
type quietLogger struct{ log *slog.Logger }

func (quietLogger) Debugf(string, ...any) {}
func (quietLogger) Infof(string, ...any)  {}
func (l quietLogger) Warnf(format string, v ...any) {
	l.log.Debug("go-proxmox: " + fmt.Sprintf(format, v...))
}
func (l quietLogger) Errorf(format string, v ...any) {
	l.log.Debug("go-proxmox: " + fmt.Sprintf(format, v...))
}
