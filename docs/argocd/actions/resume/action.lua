-- ModelRollout action resume: end a pause set by the pause action.
-- Only the action annotation is written, never the spec: Git stays the source of
-- truth, and the operator applies the action once and removes the annotation.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["rollouts.mlops.io/action"] = "resume"
return obj
