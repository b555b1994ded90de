-- Which ModelRollout actions Argo CD offers, each enabled only when the operator
-- would act on it (the same table as `kubectl modelrollout`'s refusals).
local status = obj.status or {}
local phase = status.phase or "Pending"
local ended = phase == "Succeeded" or phase == "RolledBack" or phase == "Failed"
local stopped = phase == "RolledBack" or phase == "Failed"
local steerable = not ended and phase ~= "RollingBack"
local manualPause = status.manualPause == true
local specPaused = obj.spec ~= nil and obj.spec.paused == true

local actions = {}
local function offer(name, enabled, icon, title)
  actions[name] = {["disabled"] = not enabled, ["iconClass"] = icon, ["displayName"] = title}
end

offer("promote", steerable and not specPaused, "fa fa-fw fa-step-forward",
  "Promote to the next stage")
offer("promote-full", steerable and not specPaused, "fa fa-fw fa-forward", "Promote to 100%")
offer("abort", steerable, "fa fa-fw fa-times-circle", "Abort: roll back now")
offer("retry", stopped, "fa fa-fw fa-redo-alt", "Retry from stage 1")
offer("pause", steerable and not manualPause, "fa fa-fw fa-pause-circle", "Pause")
offer("resume", phase == "Paused" and manualPause and not specPaused,
  "fa fa-fw fa-play-circle", "Resume")
return actions
