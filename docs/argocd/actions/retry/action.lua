-- ModelRollout action retry: start a rolled-back or failed rollout again from stage 1.
-- Only the action annotation is written, never the spec: Git stays the source of
-- truth, and the operator applies the action once and removes the annotation.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["rollouts.mlops.io/action"] = "retry"
return obj
