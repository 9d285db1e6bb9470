-- Argo CD health check for aiagents.dev/AIAgent (resource.customizations.health.aiagents.dev_AIAgent).
-- Reads what the operator writes: status.phase, status.observedGeneration and the Ready condition.
--   Degraded     phase Degraded or Failed, with the Ready condition's message
--   Healthy      Ready=True for the current generation
--   Progressing  anything else: no status yet, a spec the operator has not applied yet, a rollout
--                or scale-up under way, or a missing API key Secret (Pending) the operator waits for
-- Plain Lua 5.1, as Argo CD's interpreter runs it.
local hs = {}

local function ready_condition(status)
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      return condition
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local ready = ready_condition(status)
local message = ""
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  message = ready.message
end

if status.phase == "Degraded" or status.phase == "Failed" then
  hs.status = "Degraded"
  if message == "" then
    message = "AIAgent is " .. status.phase
  end
  hs.message = message
  return hs
end

local generation = obj.metadata.generation or 0
local observed = status.observedGeneration or 0
if observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to apply generation " .. tostring(generation)
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message
  return hs
end

hs.status = "Progressing"
if message == "" then
  message = "AIAgent is " .. status.phase
end
hs.message = message
return hs
