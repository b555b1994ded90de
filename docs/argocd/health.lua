-- Argo CD health of a rollouts.mlops.io/ModelRollout, read from the status the
-- operator writes. Uses only Lua's base library: Argo CD opens no string library.
local hs = {}

local function where(status)
  local text = "stage " .. tostring(status.stage or 0) .. "/" .. tostring(status.stageCount or 0)
  text = text .. " at " .. tostring(status.weight or 0) .. "%"
  if status.message ~= nil and status.message ~= "" then
    text = text .. ": " .. status.message
  end
  return text
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to pick the rollout up"
  return hs
end

local status = obj.status
local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
if (status.observedGeneration or 0) < generation then
  hs.status = "Progressing"
  hs.message = "the operator has not yet acted on generation " .. tostring(generation)
  return hs
end

local phase = status.phase
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Paused" then
  hs.status = "Suspended"
elseif phase == "RolledBack" or phase == "Failed" then
  hs.status = "Degraded"
elseif phase == "Pending" or phase == "Progressing" or phase == "RollingBack" then
  hs.status = "Progressing"
else
  hs.status = "Unknown"
end
hs.message = phase .. ", " .. where(status)
return hs
