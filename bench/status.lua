-- wrk: GET /v1/matchmaking/queue/{id}, cycling over ENTRIES, a file of
-- "<token> <queue_entry_id>" lines (distinct users). The requests are
-- formatted once, before the clock starts.
function init(args)
  requests = {}
  for line in io.lines(os.getenv("ENTRIES")) do
    local token, id = line:match("^(%S+) (%S+)$")
    requests[#requests + 1] = wrk.format("GET", "/v1/matchmaking/queue/" .. id,
      { ["Authorization"] = "Bearer " .. token })
  end
  i = math.random(#requests)
end

function request()
  local r = requests[i]
  i = i % #requests + 1
  return r
end
