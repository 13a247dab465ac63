-- wrk: POST the body in $VERIFY_BODY (a file) with the bearer key in $KEY.
local f = assert(io.open(os.getenv("VERIFY_BODY"), "r"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer " .. os.getenv("KEY")
