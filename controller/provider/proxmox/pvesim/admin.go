package pvesim

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// serveAdmin serves the simulator's own endpoints below /pvesim, with the
// same credentials as the API:
//
//	GET  /pvesim/faults   the fault knobs (JSON Faults)
//	PUT  /pvesim/faults   replace them ({} clears all)
//	GET  /pvesim/stats    faults fired, by kind
//	GET  /pvesim/calls    API calls, by endpoint
//	GET  /pvesim/vms      VMs with their configs
//	GET  /pvesim/tasks    tasks with their logs
func (s *Server) serveAdmin(w http.ResponseWriter, hr *http.Request) {
	req := &request{s: s, r: hr, method: hr.Method, path: hr.URL.Path}
	if err := s.authenticate(req); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	var out any
	switch what := strings.TrimPrefix(hr.URL.Path, AdminPath+"/"); {
	case what == "faults" && hr.Method == http.MethodGet:
		out = s.Faults()
	case what == "faults" && hr.Method == http.MethodPut:
		var f Faults
		body, err := io.ReadAll(io.LimitReader(hr.Body, 1<<20))
		if err == nil {
			err = json.Unmarshal(body, &f)
		}
		if err != nil {
			writeError(w, &apiError{status: http.StatusBadRequest, msg: "invalid faults: " + err.Error()})
			return
		}
		s.SetFaults(f)
		out = s.Faults()
	case what == "stats" && hr.Method == http.MethodGet:
		out = s.FaultStats()
	case what == "calls" && hr.Method == http.MethodGet:
		out = s.Calls()
	case what == "vms" && hr.Method == http.MethodGet:
		out = s.VMs()
	case what == "tasks" && hr.Method == http.MethodGet:
		out = s.Tasks()
	default:
		writeError(w, &apiError{status: http.StatusNotImplemented, msg: "Method '" + hr.Method + " " + hr.URL.Path + "' not implemented", noNewline: true})
		return
	}
	writeData(w, out, nil)
}
