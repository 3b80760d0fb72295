-- wrk: POST /v1/matchmaking/queue, each request a different user.
-- TOKENS names a file of JWTs, one per line; WRK_THREADS the -t value. Each
-- wrk thread takes every Nth line, so no two requests share a user (wrk
-- prints "Non-2xx or 3xx responses" if any join was refused).
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  local nthreads = tonumber(os.getenv("WRK_THREADS") or "2")
  local body = '{"time_control":"5+0","mode":"rated"}'
  -- Every request is formatted here, before the clock starts, so that wrk
  -- (which shares the machine with the server) spends its time on sockets.
  requests = {}
  local n = 0
  for line in io.lines(os.getenv("TOKENS")) do
    if n % nthreads == id then
      requests[#requests + 1] = wrk.format("POST", "/v1/matchmaking/queue",
        { ["Authorization"] = "Bearer " .. line, ["Content-Type"] = "application/json" }, body)
    end
    n = n + 1
  end
  next_request = 1
end

function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end
