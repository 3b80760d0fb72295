-- wrk: GET /v1/matchmaking/queue/{id}, cycling over ENTRIES, a file of
-- "<token> <queue_entry_id>" lines (distinct users).
function init(args)
  entries = {}
  for line in io.lines(os.getenv("ENTRIES")) do
    local token, id = line:match("^(%S+) (%S+)$")
    entries[#entries + 1] = { "Bearer " .. token, "/v1/matchmaking/queue/" .. id }
  end
  i = math.random(#entries)
end

function request()
  local e = entries[i]
  i = i % #entries + 1
  return wrk.format("GET", e[2], { ["Authorization"] = e[1] })
end
