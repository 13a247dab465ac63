-- wrk: each request to the priced route of one of TENANTS tenants (by /t/{slug}/ prefix), at random.
local n = tonumber(os.getenv("TENANTS") or "1000")
request = function()
  return wrk.format("GET", "/t/t" .. math.random(1, n) .. "/paid")
end
