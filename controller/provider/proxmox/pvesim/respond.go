package pvesim

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// apiError is an error answer the way pveproxy writes it.
type apiError struct {
	status int
	// msg is the message; its first line becomes the HTTP reason phrase.
	msg string
	// errors is the per-parameter map of a 400.
	errors map[string]string
	// bodyless answers have no JSON body (auth failures, "no such uri");
	// rawBody answers carry msg as a text body (proxy errors).
	bodyless bool
	rawBody  bool
	// noNewline keeps msg as is; Proxmox's die() messages end in "\n".
	noNewline bool
}

func (e *apiError) Error() string {
	return strings.TrimRight(e.msg, "\n")
}

// paramErr is a 400 "Parameter verification failed." with an errors map.
func paramErr(errs map[string]string) *apiError {
	return &apiError{status: http.StatusBadRequest, msg: "Parameter verification failed.", errors: errs}
}

// permErr is a 403 "Permission check failed (what)".
func permErr(what string) *apiError {
	msg := "Permission check failed"
	if what != "" {
		msg += " (" + what + ")"
	}
	return &apiError{status: http.StatusForbidden, msg: msg}
}

// die is a plain Perl die in the API code: a 500 with msg.
func die(format string, args ...any) *apiError {
	return &apiError{status: http.StatusInternalServerError, msg: fmt.Sprintf(format, args...)}
}

// toAPIError maps any error to an answer; non-API errors are 500s.
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	return die("%s", err.Error())
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimRight(line, "\r")
}

func writeData(w http.ResponseWriter, data any, extra map[string]any) {
	body := map[string]any{"data": data}
	for k, v := range extra {
		body[k] = v
	}
	b, err := json.Marshal(body)
	if err != nil {
		writeError(w, die("internal error - %v", err))
		return
	}
	h := w.Header()
	setCommonHeaders(h)
	h.Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func setCommonHeaders(h http.Header) {
	now := time.Now().UTC().Format(http.TimeFormat)
	h.Set("Server", "pve-api-daemon/3.0")
	h.Set("Cache-Control", "max-age=0")
	h.Set("Pragma", "no-cache")
	h.Set("Expires", now)
}

// writeError writes e with Proxmox's reason phrase. Go's ResponseWriter
// always writes the standard reason phrase, and go-proxmox reads Proxmox's
// error text only from the status line, so the answer is written on the
// hijacked connection (which pveproxy closes after errors too).
func writeError(w http.ResponseWriter, e *apiError) {
	msg := e.msg
	if !e.noNewline && !e.bodyless && !e.rawBody && !strings.HasSuffix(msg, "\n") {
		msg += "\n"
	}
	reason := firstLine(msg)
	if reason == "" {
		reason = http.StatusText(e.status)
	}
	var body []byte
	ctype := ""
	switch {
	case e.bodyless:
	case e.rawBody:
		body = []byte(e.msg)
	default:
		m := map[string]any{"data": nil, "message": msg}
		if len(e.errors) > 0 {
			m["errors"] = e.errors
		}
		body, _ = json.Marshal(m)
		ctype = "application/json;charset=UTF-8"
	}
	writeRaw(w, e.status, reason, ctype, body)
}

func writeRaw(w http.ResponseWriter, status int, reason, ctype string, body []byte) {
	hj, ok := w.(http.Hijacker)
	if ok && reason != http.StatusText(status) {
		conn, rw, err := hj.Hijack()
		if err == nil {
			defer conn.Close()
			_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			writeStatusLine(rw.Writer, status, reason, ctype, body)
			_ = rw.Flush()
			return
		}
	}
	h := w.Header()
	setCommonHeaders(h)
	if ctype != "" {
		h.Set("Content-Type", ctype)
	}
	h.Set("Connection", "close")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeStatusLine(bw *bufio.Writer, status int, reason, ctype string, body []byte) {
	now := time.Now().UTC().Format(http.TimeFormat)
	fmt.Fprintf(bw, "HTTP/1.1 %03d %s\r\n", status, reason)
	fmt.Fprintf(bw, "Cache-Control: max-age=0\r\nConnection: close\r\nDate: %s\r\nPragma: no-cache\r\n", now)
	fmt.Fprintf(bw, "Server: pve-api-daemon/3.0\r\nExpires: %s\r\n", now)
	if ctype != "" {
		fmt.Fprintf(bw, "Content-Type: %s\r\n", ctype)
	}
	fmt.Fprintf(bw, "Content-Length: %d\r\n\r\n", len(body))
	_, _ = bw.Write(body)
}
